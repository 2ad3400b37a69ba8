"""GroupNorm's folded backward: input gradient and per-sample affine gradients in one call."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpdrm.privacy.group_norm_grad_sample import group_norm_backward_per_sample, group_norm_forward

pytestmark = [pytest.mark.dp]


@pytest.mark.parametrize("groups,shape", [(4, (3, 8, 4, 5, 6)), (1, (2, 6, 7)), (6, (4, 6, 3, 3))],
                         ids=["3d, 4 groups", "1d, one group", "2d, one channel per group"])
def test_folded_backward_equals_per_example_loop(groups, shape):
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, shape[1]).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(shape, dtype=torch.float64)
    (norm(x) * upstream).sum().backward()

    out, mean, rstd = group_norm_forward(x.detach(), norm.weight, norm.bias, groups, norm.eps)
    torch.testing.assert_close(out, norm(x.detach()))
    grad_input, grad_weight, grad_bias = group_norm_backward_per_sample(
        upstream, x.detach(), mean, rstd, norm.weight.detach(), groups)
    torch.testing.assert_close(grad_input, x.grad, rtol=1e-10, atol=1e-12)
    for i in range(shape[0]):
        want_w, want_b = torch.autograd.grad((norm(x.detach()[i:i + 1]) * upstream[i:i + 1]).sum(),
                                             [norm.weight, norm.bias])
        torch.testing.assert_close(grad_weight[i], want_w, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_bias[i], want_b, rtol=1e-10, atol=1e-12)


def test_only_the_requested_gradients_are_returned():
    x = torch.randn(2, 4, 3, 3)
    norm = nn.GroupNorm(2, 4)
    _, mean, rstd = group_norm_forward(x, norm.weight, norm.bias, 2, norm.eps)
    grad_input, grad_weight, grad_bias = group_norm_backward_per_sample(
        torch.ones_like(x), x, mean, rstd, norm.weight.detach(), 2, input_grad=False, bias_grad=False)
    assert grad_input is None and grad_bias is None
    assert grad_weight.shape == (2, 4)


def test_an_empty_batch_gives_empty_gradients():
    x = torch.zeros(0, 4, 3, 3)
    norm = nn.GroupNorm(2, 4)
    mean = rstd = torch.zeros(0, 2)
    grad_input, grad_weight, grad_bias = group_norm_backward_per_sample(x, x, mean, rstd, norm.weight.detach(), 2)
    assert grad_input.shape == x.shape
    assert grad_weight.shape == grad_bias.shape == (0, 4)
