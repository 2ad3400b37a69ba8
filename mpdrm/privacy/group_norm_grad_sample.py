"""GroupNorm's input gradient and per-sample affine gradients from one backward call.

GroupNorm normalises each (sample, group) on its own, so a batch of B samples with C
channels in G groups is the same computation as *one* sample with B*C channels in B*G
groups, given the affine weight repeated B times. The backward of that folded GroupNorm
returns, per channel of the folded input, exactly the per-sample gradients of the weight
and bias: (B*C,) viewed as (B, C). So one ``native_group_norm_backward`` gives the input
gradient and the per-sample affine gradients at the cost of the ordinary backward, where
Opacus's sampler recomputes the normalisation and multiplies into a temporary.
"""
from __future__ import annotations

import torch


def group_norm_forward(
    inputs: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(output, mean, rstd)`` of ``F.group_norm``; ``mean`` and ``rstd`` have shape (B, G)."""
    inputs = inputs.contiguous()
    batch, channels = inputs.shape[:2]
    return torch.ops.aten.native_group_norm(
        inputs, weight, bias, batch, channels, inputs[0, 0].numel() if batch else 0, groups, eps
    )


def group_norm_backward_per_sample(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor,
    groups: int,
    *,
    input_grad: bool = True,
    weight_grad: bool = True,
    bias_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Input gradient and per-sample weight and bias gradients of a GroupNorm.

    Parameters
    ----------
    grad_output
        Gradient of the loss with respect to the output, (B, C, *spatial).
    inputs, mean, rstd
        The forward's input and its statistics from :func:`group_norm_forward`.
    weight
        The affine weight, (C,).
    groups
        Number of groups G.
    input_grad, weight_grad, bias_grad
        Which results to compute (the others are ``None``).

    Returns
    -------
    tuple
        ``(grad_input (B, C, *spatial), grad_weight (B, C), grad_bias (B, C))``.
    """
    batch, channels = inputs.shape[:2]
    if batch == 0:
        empty = weight.new_zeros((0, channels))
        return (torch.zeros_like(inputs) if input_grad else None,
                empty if weight_grad else None, empty.clone() if bias_grad else None)
    spatial = inputs[0, 0].numel()
    folded_shape = (1, batch * channels, spatial)
    grad_input, grad_weight, grad_bias = torch.ops.aten.native_group_norm_backward(
        grad_output.contiguous().view(folded_shape),
        inputs.contiguous().view(folded_shape),
        mean.reshape(1, batch * groups),
        rstd.reshape(1, batch * groups),
        weight.repeat(batch),
        1, batch * channels, spatial, batch * groups,
        [input_grad, weight_grad, bias_grad],
    )
    return (
        grad_input.view(inputs.shape) if input_grad else None,
        grad_weight.view(batch, channels) if weight_grad else None,
        grad_bias.view(batch, channels) if bias_grad else None,
    )
