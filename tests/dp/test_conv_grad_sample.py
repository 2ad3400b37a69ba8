"""The grouped-convolution per-sample weight gradients against a per-example autograd loop."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpdrm.privacy.conv_grad_sample import per_sample_weight_grad

pytestmark = [pytest.mark.dp]

LAYERS = {
    "3d 3x3x3": lambda: nn.Conv3d(4, 6, 3, padding=1, bias=False),
    "3d strided": lambda: nn.Conv3d(4, 6, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
    "3d 1x3x3, dilated": lambda: nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 2, 2), dilation=(1, 2, 2), bias=False),
    "3d 1x1x1": lambda: nn.Conv3d(6, 3, 1, bias=False),
    "3d grouped": lambda: nn.Conv3d(4, 6, 3, padding=1, groups=2),
    "3d one input channel": lambda: nn.Conv3d(1, 4, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
    "2d": lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1),
    "1d": lambda: nn.Conv1d(3, 5, 3, padding=1),
}


def input_for(layer: nn.Module, batch: int) -> torch.Tensor:
    """A float64 input batch of the layer's dimensionality."""
    spatial = {nn.Conv1d: (9,), nn.Conv2d: (9, 8), nn.Conv3d: (5, 9, 8)}[type(layer)]
    return torch.randn(batch, layer.in_channels, *spatial, dtype=torch.float64)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_per_sample_weight_grad_equals_per_example_loop(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]().double()
    x = input_for(layer, batch=3)
    upstream = torch.randn_like(layer(x))
    want = torch.stack([
        torch.autograd.grad((layer(x[i:i + 1]) * upstream[i:i + 1]).sum(), layer.weight)[0] for i in range(3)
    ])
    got = per_sample_weight_grad(x, upstream, layer.weight, stride=layer.stride, padding=layer.padding,
                                 dilation=layer.dilation, groups=layer.groups)
    assert got.shape == (3, *layer.weight.shape)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_per_sample_weight_grad_of_an_empty_batch_is_empty():
    layer = nn.Conv3d(2, 3, 3, padding=1)
    x = torch.zeros(0, 2, 4, 6, 6)
    g = torch.zeros(0, 3, 4, 6, 6)
    out = per_sample_weight_grad(x, g, layer.weight, stride=(1, 1, 1), padding=(1, 1, 1),
                                 dilation=(1, 1, 1), groups=1)
    assert out.shape == (0, *layer.weight.shape)
