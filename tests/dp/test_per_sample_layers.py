"""Per-sample layers (grad_sample_mode="grouped") inside an Opacus GradSampleModule: exact
per-sample gradients for both loss reductions, the ordinary input gradient, no summed
weight gradient, Opacus's bookkeeping kept, and a clean restore."""
from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from mpdrm.privacy.per_sample_layers import use_per_sample_layers

from .test_conv_grad_sample import LAYERS, input_for

pytestmark = [pytest.mark.dp, pytest.mark.filterwarnings("ignore:Full backward hook is firing")]

PADDED = {
    "3d 'same' padding": lambda: nn.Conv3d(2, 3, (3, 4, 4), padding="same"),
    "3d reflect padding": lambda: nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect"),
    "2d replicate padding, strided": lambda: nn.Conv2d(2, 3, 3, stride=2, padding=(1, 2), padding_mode="replicate"),
}
NORMS = {
    "GroupNorm 3d": (lambda: nn.GroupNorm(2, 4), (3, 4, 5, 6, 6)),
    "GroupNorm 2d, one group": (lambda: nn.GroupNorm(1, 3), (3, 3, 5, 4)),
}


def _loop_reference(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradients of sum(module(x_i) * upstream_i), one autograd call per example."""
    out: dict[str, list[torch.Tensor]] = {}
    params = [p for p in module.parameters() if p.requires_grad]
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    for i in range(x.shape[0]):
        grads = torch.autograd.grad((module(x[i:i + 1]) * upstream[i:i + 1]).sum(), params)
        for name, g in zip(names, grads):
            out.setdefault(name, []).append(g)
    return {name: torch.stack(g) for name, g in out.items()}


def _cases():
    for kind, make in {**LAYERS, **PADDED}.items():
        yield pytest.param(make, None, id=kind)
    for kind, (make, shape) in NORMS.items():
        yield pytest.param(make, shape, id=kind)


def _randomised(make) -> nn.Module:
    layer = make().double()
    for p in layer.parameters():
        nn.init.normal_(p)
    return layer


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("make,shape", list(_cases()))
def test_layer_gradients_equal_per_example_loop(make, shape, reduction):
    torch.manual_seed(0)
    plain = _randomised(make)
    x = input_for(plain, batch=3) if shape is None else torch.randn(shape, dtype=torch.float64)
    upstream = torch.randn_like(plain(x))
    want = _loop_reference(plain, x, upstream)
    x_plain = x.clone().requires_grad_(True)
    (plain(x_plain) * upstream).sum().backward()

    wrapped = GradSampleModule(nn.Sequential(copy.deepcopy(plain)), loss_reduction=reduction)
    use_per_sample_layers(wrapped)
    layer = wrapped._module[0]
    assert "forward" in layer.__dict__
    x_dp = x.clone().requires_grad_(True)
    out = wrapped(x_dp)
    torch.testing.assert_close(out, plain(x))
    loss = (out * upstream).sum()
    (loss / x.shape[0] if reduction == "mean" else loss).backward()

    for name, p in layer.named_parameters():
        assert p.grad is None  # the summed gradient DP-SGD would discard is not computed
        assert p._forward_counter == 0
        torch.testing.assert_close(p.grad_sample, want[name], rtol=1e-10, atol=1e-12)
    expected_input_grad = x_plain.grad / (x.shape[0] if reduction == "mean" else 1)
    torch.testing.assert_close(x_dp.grad, expected_input_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spatial", [(2, 2, 2), (8, 12, 12)], ids=["output gradient smaller", "weight gradient smaller"])
def test_mean_reduction_scales_either_side_of_the_convolution(spatial):
    """The batch-size factor goes on whichever is smaller; both must give the same result."""
    torch.manual_seed(0)
    plain = nn.Conv3d(8, 8, 3, padding=1).double()
    x = torch.randn(4, 8, *spatial, dtype=torch.float64)
    upstream = torch.randn_like(plain(x))
    want = _loop_reference(plain, x, upstream)
    wrapped = GradSampleModule(nn.Sequential(copy.deepcopy(plain)), loss_reduction="mean")
    use_per_sample_layers(wrapped)
    ((wrapped(x) * upstream).sum() / 4).backward()
    for name, p in wrapped._module[0].named_parameters():
        torch.testing.assert_close(p.grad_sample, want[name], rtol=1e-10, atol=1e-12)


def test_frozen_parameters_get_no_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.GroupNorm(2, 4)).double()
    wrapped = GradSampleModule(model, loss_reduction="sum")
    use_per_sample_layers(wrapped)
    model[0].weight.requires_grad_(False)  # frozen after wrapping, as train.freeze does
    model[1].bias.requires_grad_(False)
    x = torch.randn(3, 2, 4, 5, 5, dtype=torch.float64)
    upstream = torch.randn(3, 4, 4, 5, 5, dtype=torch.float64)
    wrapped.disable_hooks()
    want = _loop_reference(model, x, upstream)
    wrapped.enable_hooks()
    (wrapped(x) * upstream).sum().backward()
    assert model[0].weight.grad_sample is None and model[1].bias.grad_sample is None
    for name in ("0.bias", "1.weight"):
        torch.testing.assert_close(model.get_parameter(name).grad_sample, want[name], rtol=1e-10, atol=1e-12)


def test_outside_training_nothing_is_recorded():
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.GroupNorm(2, 4))
    wrapped = GradSampleModule(model)
    use_per_sample_layers(wrapped)
    x = torch.randn(2, 2, 4, 5, 5)
    with torch.no_grad():
        wrapped(x)
    wrapped.eval()
    wrapped(x).sum().backward()  # eval mode: an ordinary backward
    for p in model.parameters():
        assert p._forward_counter == 0 and p.grad_sample is None
        assert p.grad is not None


def test_a_second_backward_before_the_step_is_refused_under_poisson_sampling():
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.GroupNorm(2, 4))
    wrapped = GradSampleModule(model)
    use_per_sample_layers(wrapped)
    wrapped.forbid_grad_accumulation()
    x = torch.randn(2, 2, 4, 5, 5)
    wrapped(x).sum().backward()
    with pytest.raises(ValueError, match="not compatible with gradient accumulation"):
        wrapped(x).sum().backward()


def test_other_layers_keep_opacus_hooks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 5 * 5, 2)).double()
    x = torch.randn(3, 2, 4, 5, 5, dtype=torch.float64)
    upstream = torch.randn_like(model(x))
    want = _loop_reference(model, x, upstream)
    wrapped = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    use_per_sample_layers(wrapped)
    conv, _, linear = wrapped._module
    assert "forward" in conv.__dict__ and not conv._forward_hooks and not conv._backward_hooks
    assert "forward" not in linear.__dict__ and linear._forward_hooks and linear._backward_hooks
    (wrapped(x) * upstream).sum().backward()
    for name, p in wrapped._module.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[name], rtol=1e-10, atol=1e-12)


def test_only_this_module_changes_and_restore_makes_layers_plain():
    opacus_sampler = GradSampleModule.GRAD_SAMPLERS[nn.Linear]
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(3 * 4 * 5 * 5, 2))
    other = GradSampleModule(copy.deepcopy(model))
    wrapped = GradSampleModule(model)
    restore = use_per_sample_layers(wrapped)
    assert GradSampleModule.GRAD_SAMPLERS[nn.Linear] is opacus_sampler
    assert other.GRAD_SAMPLERS[nn.Linear] is opacus_sampler
    assert wrapped.GRAD_SAMPLERS[nn.Linear] is not opacus_sampler
    restore()
    wrapped.remove_hooks()
    assert not any("forward" in m.__dict__ for m in model)
    x = torch.randn(2, 2, 4, 5, 5)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


class _SharedConv(nn.Module):
    """One convolution applied twice in a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 3, 3, padding=1)
        self.norm = nn.GroupNorm(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(torch.relu(self.conv(x)))).mean(dim=(1, 2, 3, 4))


def test_a_module_used_twice_accumulates_per_sample_gradients():
    torch.manual_seed(0)
    model = _SharedConv().double()
    x = torch.randn(3, 3, 4, 6, 6, dtype=torch.float64)
    want: dict[str, list[torch.Tensor]] = {}
    for i in range(3):
        grads = torch.autograd.grad(model(x[i:i + 1]).sum(), list(model.parameters()))
        for (name, _), g in zip(model.named_parameters(), grads):
            want.setdefault(name, []).append(g)
    wrapped = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    use_per_sample_layers(wrapped)
    wrapped(x).sum().backward()
    for name, p in wrapped._module.named_parameters():
        torch.testing.assert_close(p.grad_sample, torch.stack(want[name]), rtol=1e-10, atol=1e-12)
