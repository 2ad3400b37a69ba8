"""Per-example clipping and coverage of DP-SGD on the real MPDRM (tiny)."""
from __future__ import annotations

import pytest
import torch

from mpdrm.privacy import SiteAccountant, make_private, plain_state_dict

pytestmark = pytest.mark.dp

MODES = ["grouped", "ew", "hooks", "functorch"]


def _first_batch(loader, n):
    batch = next(iter(loader))
    return {k: v[:n] for k, v in batch.items()}


def _reference_clipped_sum(model, loss_fn, batch, bound):
    """Sum over examples of each example's gradient clipped to ``bound``, one at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(batch["clips"].shape[0]):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(loss_fn(model, one), params)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, bound / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += factor * g
        norms.append(float(norm))
    return total, norms


@pytest.mark.parametrize("mode", MODES)
def test_summed_clipped_gradient_equals_per_example_loop(mode, model, loader, loss_fn):
    bound = 0.05
    params = [p for p in model.parameters() if p.requires_grad]
    batch = _first_batch(loader, 4)
    reference, norms = _reference_clipped_sum(model, loss_fn, batch, bound)
    assert max(norms) > bound, "bound too loose: clipping would not be exercised"

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    private = make_private(model, opt, loader, accountant=SiteAccountant("rdp"),
                           noise_multiplier=0.0, max_grad_norm=bound, grad_sample_mode=mode)
    private.optimizer.zero_grad(set_to_none=True)
    loss_fn(private.model, batch).backward()
    private.optimizer.clip_and_accumulate()  # Opacus's own per-example clipping + sum
    for p, ref in zip(params, reference):
        torch.testing.assert_close(p.summed_grad, ref, rtol=1e-3, atol=1e-6)
    private.close()


@pytest.mark.parametrize("mode", ["grouped", "ew"])
def test_every_example_clipped_norm_within_bound(mode, model, loader, loss_fn):
    bound = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    private = make_private(model, opt, loader, accountant=SiteAccountant("rdp"),
                           noise_multiplier=0.0, max_grad_norm=bound, grad_sample_mode=mode)
    batch = _first_batch(loader, 4)
    params = private.optimizer.params
    for i in range(4):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        private.optimizer.zero_grad(set_to_none=True)
        loss_fn(private.model, one).backward()
        raw = torch.sqrt(sum((p.grad_sample.double() ** 2).sum() for p in params))
        private.optimizer.clip_and_accumulate()
        clipped = torch.sqrt(sum((p.summed_grad.double() ** 2).sum() for p in params))
        assert raw > bound
        assert clipped <= bound * (1 + 1e-5)
        assert clipped >= bound * 0.999  # clipped *to* the bound, not zeroed
    private.close()


def test_every_trainable_parameter_gets_per_example_gradients(model, loader, loss_fn):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("personality.") for n in names)
    assert any(n.startswith("personality.prototypes") for n in names)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    private = make_private(model, opt, loader, accountant=SiteAccountant(),
                           noise_multiplier=1.0, max_grad_norm=1.0)
    batch = _first_batch(loader, 3)
    loss_fn(private.model, batch).backward()
    missing = [n for n, p in model.named_parameters() if getattr(p, "grad_sample", None) is None]
    assert missing == []
    for n, p in model.named_parameters():
        assert p.grad_sample.shape == (3, *p.shape), n
    private.close()


def test_optimizer_must_cover_personality_parameters(model, loader):
    shared_only = [p for n, p in model.named_parameters() if not n.startswith("personality.")]
    opt = torch.optim.SGD(shared_only, lr=0.1)
    with pytest.raises(ValueError, match="personality"):
        make_private(model, opt, loader, accountant=SiteAccountant(),
                     noise_multiplier=1.0, max_grad_norm=1.0)


def test_batch_sampler_loader_is_refused(model, dataset):
    sampler = torch.utils.data.BatchSampler(range(len(dataset)), batch_size=4, drop_last=False)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Poisson"):
        make_private(model, opt, loader, accountant=SiteAccountant(),
                     noise_multiplier=1.0, max_grad_norm=1.0)


def test_hooks_mode_is_refused_for_convolutions_opacus_pads_wrongly(model, loader):
    """Opacus 1.6's conv sampler ignores padding_mode; make_private must not use it there."""
    from opacus import GradSampleModule

    reflect = torch.nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect").double()
    x = torch.randn(2, 2, 4, 5, 5, dtype=torch.float64)
    upstream = torch.randn_like(reflect(x))
    want = torch.stack([torch.autograd.grad((reflect(x[i:i + 1]) * upstream[i:i + 1]).sum(), reflect.weight)[0]
                        for i in range(2)])
    hooked = GradSampleModule(torch.nn.Sequential(reflect), loss_reduction="sum")
    (hooked(x) * upstream).sum().backward()
    assert not torch.allclose(reflect.weight.grad_sample, want)  # the library limit behind the check

    model.add_module("padded", torch.nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"'hooks'.*padding_mode.*'padded'"):
        make_private(model, opt, loader, accountant=SiteAccountant(),
                     noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode="hooks")


@pytest.mark.parametrize("mode", ["grouped", "hooks"])
def test_plain_names_and_unwrapped_model_after_training(mode, model, loader, train_round):
    from mpdrm import partition

    keys = list(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    private = make_private(model, opt, loader, accountant=SiteAccountant(),
                           noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
    assert all(k.startswith("_module.") for k in private.model.state_dict())
    assert list(private.state_dict()) == keys
    train_round(private)
    plain = private.close()
    assert plain is model
    assert list(plain_state_dict(private.model)) == keys
    shared, local = partition(plain)
    assert set(shared) | set(local) == set(keys) and local
    assert all(k.startswith("personality.") for k in local)
    changed = [k for k in local if not torch.equal(before[k], plain.state_dict()[k])]
    assert changed, "the personality branch was not trained"
    # hooks are gone: a plain backward leaves no per-sample gradients behind
    out = plain(torch.randn(2, 1, 8, 32, 32))
    (out.prediction.sum() + out.personality.sum()).backward()  # p reaches RARM detached
    assert all(not hasattr(p, "grad_sample") for p in plain.parameters())
    # ... and the convolutions compute their ordinary weight gradients again
    convs = [m for m in plain.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all("_conv_forward" not in m.__dict__ for m in convs)
    assert all(m.weight.grad is not None for m in convs if m.weight.requires_grad)


def test_empty_batch_takes_a_counted_noise_only_step(model, loader):
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    acct = SiteAccountant()
    private = make_private(model, opt, loader, accountant=acct,
                           noise_multiplier=1.0, max_grad_norm=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    private.noise_only_step()
    assert acct.steps == 1
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    private.close()


def test_batch_coupled_loss_breaks_the_loop_reference(model, loader, loss_fn):
    """The loop reference detects a loss that couples examples (e.g. batch statistics)."""

    def coupled(m, batch):
        out = m(batch["clips"])
        pred = out.prediction - out.prediction.mean()  # batch statistic
        proto = torch.nn.functional.cross_entropy(out.prototype_similarity / 0.1, batch["subject"])
        return ((pred - batch["target"]) ** 2).mean() + proto

    bound = 0.05
    params = [p for p in model.parameters() if p.requires_grad]
    batch = _first_batch(loader, 4)
    reference, _ = _reference_clipped_sum(model, coupled, batch, bound)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    private = make_private(model, opt, loader, accountant=SiteAccountant("rdp"),
                           noise_multiplier=0.0, max_grad_norm=bound)
    coupled(private.model, batch).backward()
    private.optimizer.clip_and_accumulate()
    assert not all(torch.allclose(p.summed_grad, r, rtol=1e-3, atol=1e-6)
                   for p, r in zip(params, reference))
    private.close()


def test_empty_first_poisson_batch_keeps_the_dict_structure(model, loader):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    private = make_private(model, opt, loader, accountant=SiteAccountant(),
                           noise_multiplier=1.0, max_grad_norm=1.0)
    empty = private.loader.collate_fn([])  # what the loader yields when no example is sampled
    assert isinstance(empty, dict) and set(empty) == set(loader.dataset[0])
    assert empty["clips"].shape == (0, 1, 8, 32, 32)
    from mpdrm.privacy import is_empty_batch
    assert is_empty_batch(empty)
    private.close()
