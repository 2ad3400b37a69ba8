"""train_local with an engine equals the same steps written out by hand, bit for bit (plain and
DP-SGD), and FedProx works under both engines."""
import itertools
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.device import seed_everything
from mpdrm.losses import MPDRMLoss
from mpdrm.privacy import PrivateEngine, SiteAccountant, make_private, private_step
from mpdrm.training import TrainConfig, default_step, make_optimizer, train_local

STEPS = 3


def _model():
    torch.manual_seed(3)
    return mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8, dropout=0.0)


def _loader(data):
    return DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))


def _cfg(**kw):
    """The steps by hand run in the standard layout; so does the engine here (a layout changes
    the order of float sums, tests/model/test_memory_format.py)."""
    return TrainConfig(device="cpu", seed=11, schedule="none", max_steps=STEPS, contrastive="prototype",
                       memory_format="contiguous", **kw)


def _private(model, optimizer, loader):
    return make_private(model, optimizer, loader, accountant=SiteAccountant(), noise_multiplier=1.0,
                        max_grad_norm=1.0)


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_plain_engine_equals_the_steps_by_hand(brightness_dataset):
    data = brightness_dataset(n=16)
    cfg = _cfg()
    by_hand = _model()
    seed_everything(cfg.seed)
    optimizer = make_optimizer(by_hand, cfg)
    loss_fn = MPDRMLoss.from_configs(by_hand.config, cfg, per_example=False)
    for batch in itertools.islice(_loader(data), STEPS):
        default_step(by_hand, batch, optimizer, loss_fn, cfg.grad_clip)

    engine = _model()
    result = train_local(engine, _loader(data), cfg)
    assert result.steps == STEPS
    _assert_same_weights(by_hand, engine)
    assert str(optimizer.state_dict()) == str(result.optimizer_state)


def test_private_engine_equals_the_steps_by_hand(brightness_dataset):
    warnings.filterwarnings("ignore", module="opacus")
    data = brightness_dataset(n=16)
    cfg = _cfg()
    by_hand = _model()
    seed_everything(cfg.seed)  # the noise comes from torch's global generator
    optimizer = make_optimizer(by_hand, cfg)
    private = _private(by_hand, optimizer, _loader(data))
    loss_fn = MPDRMLoss.from_configs(by_hand.config, cfg, per_example=True)
    for batch in itertools.islice(private.loader, STEPS):
        private_step(private.model, batch, private.optimizer, loss_fn)
    private.close()

    engine = _model()
    result = train_local(engine, _loader(data), cfg, engine=PrivateEngine(_private))
    assert result.steps == STEPS
    _assert_same_weights(by_hand, engine)
    assert str(optimizer.state_dict()) == str(result.optimizer_state)
    assert all(not hasattr(p, "grad_sample") for p in engine.parameters())


@pytest.mark.parametrize("private", [False, True], ids=["plain", "dp"])
def test_fedprox_pulls_towards_the_reference_under_both_engines(private, brightness_dataset):
    warnings.filterwarnings("ignore", module="opacus")
    data = brightness_dataset(n=16)

    def drift(mu):
        model = _model()
        start = {k: v.clone() for k, v in mpdrm.shared_state(model).items()}
        engine = PrivateEngine(_private) if private else None
        result = train_local(model, _loader(data), _cfg(lr=1e-2, proximal_mu=mu), engine=engine,
                             reference_params=start)
        names = dict(model.named_parameters())
        return sum(float((names[k].detach() - v).square().sum()) for k, v in start.items()), result

    free, free_result = drift(0.0)
    held, held_result = drift(50.0)
    assert free_result.metrics["proximal"] == 0.0 and held_result.metrics["proximal"] > 0.0
    assert held < free
