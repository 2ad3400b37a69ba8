"""The grouped-convolution per-sample gradients (grad_sample_mode="grouped") against a
per-example autograd loop, layer by layer, and the pieces that install them."""
from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import nn

from mpdrm.privacy.conv_grad_sample import (
    conv_grad_sample,
    per_sample_weight_grad,
    skip_batched_weight_grad,
    supports,
    use_grouped_conv_grad_samples,
)

pytestmark = [pytest.mark.dp, pytest.mark.filterwarnings("ignore:Full backward hook is firing")]

LAYERS = {
    "3d 3x3x3": lambda: nn.Conv3d(4, 6, 3, padding=1, bias=False),
    "3d strided, biased": lambda: nn.Conv3d(4, 6, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
    "3d 1x3x3, dilated": lambda: nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 2, 2), dilation=(1, 2, 2), bias=False),
    "3d 1x1x1": lambda: nn.Conv3d(6, 3, 1, bias=False),
    "3d grouped": lambda: nn.Conv3d(4, 6, 3, padding=1, groups=2),
    "3d one input channel": lambda: nn.Conv3d(1, 4, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
    "2d": lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1),
    "1d": lambda: nn.Conv1d(3, 5, 3, padding=1),
}


def _input_for(layer: nn.Module, batch: int) -> torch.Tensor:
    spatial = {nn.Conv1d: (9,), nn.Conv2d: (9, 8), nn.Conv3d: (5, 9, 8)}[type(layer)]
    return torch.randn(batch, layer.in_channels, *spatial, dtype=torch.float64)


def _loop_reference(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradients of sum(conv(x_i) * upstream_i), one autograd call per example."""
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(x.shape[0]):
        y = layer(x[i:i + 1])
        grads = torch.autograd.grad((y * upstream[i:i + 1]).sum(), [p for _, p in layer.named_parameters()])
        for (name, _), g in zip(layer.named_parameters(), grads):
            out.setdefault(name, []).append(g)
    return {name: torch.stack(g) for name, g in out.items()}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_conv_grad_sample_equals_per_example_loop(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]().double()
    x = _input_for(layer, batch=3)
    upstream = torch.randn_like(layer(x))
    want = _loop_reference(layer, x, upstream)
    got = conv_grad_sample(layer, [x], upstream)
    assert set(got) == {p for p in layer.parameters()}
    for name, p in layer.named_parameters():
        assert got[p].shape == (3, *p.shape)
        torch.testing.assert_close(got[p], want[name], rtol=1e-10, atol=1e-12)


def test_per_sample_weight_grad_of_an_empty_batch_is_empty():
    layer = nn.Conv3d(2, 3, 3, padding=1)
    x = torch.zeros(0, 2, 4, 6, 6)
    g = torch.zeros(0, 3, 4, 6, 6)
    out = per_sample_weight_grad(x, g, layer.weight, stride=(1, 1, 1), padding=(1, 1, 1),
                                 dilation=(1, 1, 1), groups=1)
    assert out.shape == (0, *layer.weight.shape)


@pytest.mark.parametrize("layer", [nn.Conv3d(2, 3, 3, padding="same"),
                                   nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect")],
                         ids=["string padding", "reflect padding"])
def test_unsupported_layers_go_to_opacus_sampler(layer):
    assert not supports(layer)
    layer = layer.double()
    x = torch.randn(2, 2, 4, 6, 6, dtype=torch.float64)
    upstream = torch.randn_like(layer(x))
    got = conv_grad_sample(layer, [x], upstream)
    want = compute_conv_grad_sample(layer, [x], upstream)
    for p in layer.parameters():
        torch.testing.assert_close(got[p], want[p])
    skip_batched_weight_grad(nn.Sequential(layer))
    assert "_conv_forward" not in layer.__dict__  # left as an ordinary convolution


def test_skipping_the_weight_gradient_keeps_the_input_gradient_and_restores():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, stride=2, padding=1)).double()
    patched = copy.deepcopy(plain)
    x = torch.randn(2, 2, 5, 8, 8, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    plain(x).square().sum().backward()
    restore = skip_batched_weight_grad(patched)
    out = patched(x2)
    torch.testing.assert_close(out, plain(x.detach()))
    out.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)  # the input gradient is the ordinary one
    assert all(p.grad is None for p in patched.parameters())  # no summed weight gradient was computed
    restore()
    patched(x2).square().sum().backward()
    for p, q in zip(patched.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_grouped_mode_changes_one_module_not_opacus_registry():
    opacus_sampler = GradSampleModule.GRAD_SAMPLERS[nn.Conv3d]
    wrapped = GradSampleModule(nn.Sequential(nn.Conv3d(2, 3, 3, padding=1)))
    other = GradSampleModule(nn.Sequential(nn.Conv3d(2, 3, 3, padding=1)))
    use_grouped_conv_grad_samples(wrapped)
    assert GradSampleModule.GRAD_SAMPLERS[nn.Conv3d] is opacus_sampler
    assert other.GRAD_SAMPLERS[nn.Conv3d] is opacus_sampler
    assert wrapped.GRAD_SAMPLERS[nn.Conv3d] is not opacus_sampler


class _SharedConv(nn.Module):
    """One convolution applied twice in a forward pass (its hooks fire twice per backward)."""

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
    use_grouped_conv_grad_samples(wrapped)
    wrapped(x).sum().backward()
    for name, p in wrapped._module.named_parameters():
        torch.testing.assert_close(p.grad_sample, torch.stack(want[name]), rtol=1e-10, atol=1e-12)
