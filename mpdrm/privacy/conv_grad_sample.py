"""Per-sample convolution gradients at the cost of one ordinary weight gradient.

Opacus's own convolution grad sampler unfolds the input (``unfold3d``: a 27x copy of every
3x3x3 activation), and torch's expanded weights ('ew') run a grouped convolution whose
kernel is the whole output map; on MPDRM both cost 3-8x the ordinary batched weight
gradient (``benchmarks/dp_overhead.py``). Here the batch is folded into the convolution's
groups instead: with ``x`` of shape (B, C_in, ...) seen as (1, B*C_in, ...), the gradient
``g`` as (1, B*C_out, ...) and the weight repeated B times, the *weight gradient of that
grouped convolution* is exactly the stack of the B per-sample weight gradients, and oneDNN
computes it with the same kernels (and nearly the same speed) as the batched one.

Three pieces, installed together by :func:`use_grouped_conv_grad_samples` for
``grad_sample_mode="grouped"`` (``mpdrm.privacy.engine``):

- :func:`conv_grad_sample`, an Opacus grad sampler ``(layer, activations, backprops)``;
- :func:`skip_batched_weight_grad`, which makes each convolution's backward compute the input
  gradient only, so the (discarded) summed weight gradient is not paid for as well: DP-SGD
  uses the per-sample gradients alone;
- :func:`store_without_copy`, which hands every sampler's result to Opacus without the
  zero-fill and copy that Opacus 1.6 makes of it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def supports(layer: nn.Module) -> bool:
    """Whether :func:`conv_grad_sample` handles ``layer`` (else Opacus's sampler is used)."""
    return (
        isinstance(layer, CONV_TYPES)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


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
        The convolution's parameters (padding as numbers, zero padding).
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


def conv_grad_sample(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus grad sampler for ``nn.Conv1d/2d/3d`` (zero padding given as numbers).

    Same signature and result as ``opacus.grad_sample.conv.compute_conv_grad_sample``:
    ``{parameter: per-sample gradient of shape (B, *parameter.shape)}``; a layer that
    :func:`supports` refuses goes to Opacus's own sampler.
    """
    if not supports(layer):
        return compute_conv_grad_sample(layer, activations, backprops)
    x = activations[0].to(backprops.dtype)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        out[layer.weight] = per_sample_weight_grad(
            x, backprops, layer.weight, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=layer.groups,
        )
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = backprops.reshape(*backprops.shape[:2], -1).sum(dim=2)
    return out


class _InputGradOnlyConv(torch.autograd.Function):
    """A convolution whose backward returns the input gradient only (None for the weights)."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(inputs, weight)
        ctx.conv = (stride, padding, dilation, groups)
        return torch.ops.aten.convolution(inputs, weight, bias, stride, padding, dilation, False,
                                          [0] * (inputs.dim() - 2), groups)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        inputs, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad_input = torch.ops.aten.convolution_backward(
            grad_output.contiguous(), inputs, weight, None, stride, padding, dilation, False,
            [0] * (inputs.dim() - 2), groups, [True, False, False],
        )[0]
        return (grad_input,) + (None,) * 6


def _input_grad_only_forward(layer: nn.Module) -> Callable:
    def conv_forward(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _InputGradOnlyConv.apply(inputs, weight, bias, list(layer.stride), list(layer.padding),
                                        list(layer.dilation), layer.groups)
    return conv_forward


def skip_batched_weight_grad(model: nn.Module) -> Callable[[], None]:
    """Make every supported convolution in ``model`` skip its summed weight gradient.

    Only for DP-SGD with per-sample gradients from :func:`conv_grad_sample`: afterwards the
    convolutions' ``.grad`` stays unset (DP-SGD writes the noisy clipped sum there itself).
    Returns a function that restores the ordinary convolutions.
    """
    patched = [m for m in model.modules() if supports(m)]
    for layer in patched:
        layer._conv_forward = _input_grad_only_forward(layer)  # instance attribute shadows the method

    def restore() -> None:
        for layer in patched:
            layer.__dict__.pop("_conv_forward", None)
    return restore


def use_grouped_conv_grad_samples(grad_sample_module: nn.Module) -> Callable[[], None]:
    """Switch an Opacus hooks-mode ``GradSampleModule`` to :func:`conv_grad_sample`.

    Only this instance changes (Opacus's global sampler registry is left alone): its
    convolutions stop computing the summed weight gradient (:func:`skip_batched_weight_grad`),
    and every sampler hands its result over without a copy (:func:`store_without_copy`).
    Returns the function that restores the model's ordinary convolutions.
    """
    samplers = dict(type(grad_sample_module).GRAD_SAMPLERS)
    samplers.update({conv_type: conv_grad_sample for conv_type in CONV_TYPES})
    grad_sample_module.GRAD_SAMPLERS = {kind: store_without_copy(fn) for kind, fn in samplers.items()}
    return skip_batched_weight_grad(grad_sample_module)


def store_without_copy(sampler: Callable) -> Callable:
    """Wrap an Opacus grad sampler so that its per-sample gradients are stored as they are.

    Opacus 1.6 (``create_or_accumulate_grad_sample``) allocates a zero tensor of the full
    per-sample shape for every parameter and copies the sampler's result into it: on MPDRM
    about 90 MB zeroed and copied per step of batch 8. A full-batch result is stored directly on the parameter as
    Opacus's pending ``_current_grad_sample`` (summed out of place when a module runs twice
    in one pass); anything else (a shorter result) still goes through Opacus.
    """
    def sample(layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor):
        rest = {}
        full = getattr(layer, "max_batch_len", backprops.shape[0])
        for param, grad_sample in sampler(layer, activations, backprops).items():
            if not param.requires_grad:
                continue
            if grad_sample.shape[0] != full:
                rest[param] = grad_sample
                continue
            pending = getattr(param, "_current_grad_sample", None)
            param._current_grad_sample = grad_sample if pending is None else pending + grad_sample
        return rest
    return sample
