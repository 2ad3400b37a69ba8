"""Opacus computes exact per-sample gradients for every parameter of the model, in each
grad_sample_mode, and the training loop runs under PrivacyEngine through its `prepare` hook."""
import copy
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.losses import MPDRMLoss
from mpdrm.training import TrainConfig, train_local

pytestmark = [pytest.mark.dp,
              pytest.mark.filterwarnings("ignore:Full backward hook is firing")]


def _wrap(model, mode):
    from opacus import GradSampleModule
    from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights

    if mode == "ew":
        return GradSampleModuleExpandedWeights(model, loss_reduction="sum")
    wrapped = GradSampleModule(model, loss_reduction="sum", force_functorch=(mode == "functorch"))
    if mode == "grouped":
        from mpdrm.privacy.per_sample_layers import use_per_sample_layers

        use_per_sample_layers(wrapped)
    return wrapped


def _loop_grads(model, batch, loss_fn):
    grads = {}
    for i in range(batch["clips"].shape[0]):
        model.zero_grad()
        one = {k: v[i: i + 1] for k, v in batch.items()}
        loss, _ = loss_fn(model(one["clips"]), one)
        loss.backward()
        for n, p in model.named_parameters():
            grads.setdefault(n, []).append(p.grad.clone())
    return {n: torch.stack(g) for n, g in grads.items()}


@pytest.mark.parametrize("mode,size", [("grouped", 64), ("hooks", 64), ("functorch", 32), ("ew", 32)])
def test_per_sample_gradients_match_per_example_loop(mode, size, make_batch):
    warnings.filterwarnings("ignore", module="opacus")
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=3, image_size=size, frames=16 if size == 64 else 8,
                              dropout=0.0).double()  # float64: compare to rounding, not float32 noise
    batch = make_batch(model.config, b=2 if size == 64 else 3)
    batch["clips"] = batch["clips"].double()
    loss_fn = MPDRMLoss(per_example=True, lambda_c=0.5, lambda_o=0.5)
    want = _loop_grads(model, batch, loss_fn)
    dp_model = copy.deepcopy(model)
    wrapped = _wrap(dp_model, mode)
    per, _ = loss_fn(wrapped(batch["clips"]), batch, reduction="none")
    per.sum().backward()
    names = [n for n, _ in dp_model.named_parameters()]
    assert len(names) == len(want)
    for n, p in dp_model.named_parameters():
        gs = p.grad_sample
        assert gs is not None, f"{mode}: no per-sample gradient for {n}"
        assert gs.shape == (batch["clips"].shape[0], *p.shape), n
        scale = want[n].abs().max().clamp_min(1e-6)
        assert (gs - want[n]).abs().max() <= 1e-8 * scale, f"{mode}: {n}"


def test_train_local_under_privacy_engine(brightness_dataset):
    warnings.filterwarnings("ignore", module="opacus")
    from opacus import PrivacyEngine

    from mpdrm.privacy import PrivateEngine, PrivateTraining

    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = PrivacyEngine(accountant="rdp")

    def attach(m, opt, loader):
        wrapped, dp_opt, dp_loader = engine.make_private(module=m, optimizer=opt, data_loader=loader,
                                                         noise_multiplier=1.0, max_grad_norm=1.0,
                                                         grad_sample_mode="hooks")
        return PrivateTraining(model=wrapped, optimizer=dp_opt, loader=dp_loader, module=m, noise_multiplier=1.0,
                               max_grad_norm=1.0, sample_rate=1 / len(dp_loader))

    loader = DataLoader(brightness_dataset(n=16), batch_size=8)
    result = train_local(model, loader, TrainConfig(device="cpu"), engine=PrivateEngine(attach))
    assert result.steps >= 1
    eps1 = engine.get_epsilon(1e-5)
    assert eps1 > 0
    # the wrapper is closed after the call: a second round wraps the same model again, and the
    # engine's accountant keeps counting
    assert not hasattr(model, "autograd_grad_sample_hooks")
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    again = train_local(model, loader, TrainConfig(device="cpu"), engine=PrivateEngine(attach),
                        optimizer_state=result.optimizer_state)
    assert again.steps >= 1 and engine.get_epsilon(1e-5) > eps1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.optimizer_state["state"]
