"""Per-sample convolution gradients at the cost of one ordinary weight gradient.

Opacus's own convolution grad sampler unfolds the input (``unfold3d``: a 27x copy of every
3x3x3 activation), and torch's expanded weights ('ew') run a grouped convolution whose
kernel is the whole output map; on MPDRM both cost 3-8x the ordinary batched weight
gradient (``benchmarks/dp_overhead.py``). Here the batch is folded into the convolution's
groups instead: with ``x`` of shape (B, C_in, ...) seen as (1, B*C_in, ...), the gradient
``g`` as (1, B*C_out, ...) and the weight repeated B times, the *weight gradient of that
grouped convolution* is exactly the stack of the B per-sample weight gradients, and oneDNN
computes it with the same kernels (and nearly the same speed) as the batched one.

:mod:`mpdrm.privacy.per_sample_layers` calls :func:`per_sample_weight_grad` from each
convolution's own backward (``grad_sample_mode="grouped"``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def per_sample_weight_grad(
    inputs: torch.Tensor,
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Per-sample gradients of a convolution's weight, shape (B, *weight.shape).

    Parameters
    ----------
    inputs
        The convolution's input, (B, C_in, *spatial).
    grad_output
        Gradient of the loss with respect to its output, (B, C_out, *spatial_out).
    weight
        The weight (only its shape, dtype and device matter).
    stride, padding, dilation, groups
        The convolution's parameters (zero padding, as numbers: pad other modes beforehand).
    """
    batch = inputs.shape[0]
    if batch == 0:
        return weight.new_zeros((0, *weight.shape))
    if weight.shape[1] == 1:
        # one input channel per group (e.g. a grayscale stem): the folded convolution is a
        # depthwise one with a large kernel, which oneDNN runs slowly; per sample is faster
        return torch.stack([
            _weight_grad(inputs[i:i + 1], grad_output[i:i + 1], weight, stride, padding, dilation, groups)
            for i in range(batch)
        ])
    folded_input = inputs.reshape(1, batch * inputs.shape[1], *inputs.shape[2:])
    folded_grad = grad_output.reshape(1, batch * grad_output.shape[1], *grad_output.shape[2:])
    # only the weight's shape matters for a weight gradient: no need to copy it B times
    folded_weight = weight.new_empty((batch * weight.shape[0], *weight.shape[1:]))
    grad = _weight_grad(folded_input, folded_grad, folded_weight, stride, padding, dilation, batch * groups)
    return grad.view(batch, *weight.shape)


def _weight_grad(inputs, grad_output, weight, stride, padding, dilation, groups) -> torch.Tensor:
    return torch.ops.aten.convolution_backward(
        grad_output.contiguous(), inputs.contiguous(), weight, None, list(stride), list(padding),
        list(dilation), False, [0] * (inputs.dim() - 2), groups, [False, True, False],
    )[1]
