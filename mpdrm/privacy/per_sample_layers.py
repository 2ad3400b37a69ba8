"""Convolutions and GroupNorms that compute their per-sample gradients in their own backward.

Opacus's hooks mode wraps every layer with parameters in a forward hook (keeping its
input) and a full backward hook (keeping its output gradient), multiplies every output
gradient by the batch size, and then calls a grad sampler in Python. On MPDRM's 124
convolutions and GroupNorms that bookkeeping alone costs more than a tenth of a training
step, and the layers' own backward still computes the summed weight gradient that
DP-SGD throws away. Here each such layer runs as one autograd function whose backward
returns the input gradient and hands the per-sample parameter gradients to Opacus
directly (:mod:`mpdrm.privacy.grad_sample_store`):

- convolution: the input gradient alone, plus :func:`~mpdrm.privacy.conv_grad_sample.per_sample_weight_grad`;
- GroupNorm: :func:`~mpdrm.privacy.group_norm_grad_sample.group_norm_backward_per_sample`,
  one call for both.

:func:`use_per_sample_layers` installs them on one Opacus ``GradSampleModule`` (hooks
mode); all other layers (Linear, Embedding) keep Opacus's hooks and samplers.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn

from .conv_grad_sample import CONV_TYPES, per_sample_weight_grad
from .grad_sample_store import count_forward, record_grad_sample, store_without_copy
from .group_norm_grad_sample import group_norm_backward_per_sample, group_norm_forward


class _Recorder:
    """Where a layer's per-sample gradients go: the Opacus module's parameters."""

    def __init__(self, grad_sample_module: GradSampleModule) -> None:
        self.module = grad_sample_module

    @property
    def enabled(self) -> bool:
        return self.module.hooks_enabled

    def scale(self, batch: int) -> int:
        """Factor from the gradient of the batch loss to per-sample gradients."""
        return batch if self.module.loss_reduction == "mean" else 1

    def record(self, param: nn.Parameter, grad_sample: torch.Tensor) -> None:
        record_grad_sample(param, grad_sample, allow_accumulation=self.module.grad_accumulation_allowed)


def _scaled(tensor: torch.Tensor, factor: int, *, in_place: bool = True) -> torch.Tensor:
    if factor == 1:
        return tensor
    return tensor.mul_(factor) if in_place else tensor * factor


class _PerSampleConv(torch.autograd.Function):
    """Convolution; backward: input gradient, and per-sample weight and bias gradients."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, padding, layer, recorder):  # type: ignore[override]
        ctx.save_for_backward(inputs, weight)
        ctx.padding, ctx.layer, ctx.recorder = padding, layer, recorder
        return torch.ops.aten.convolution(
            inputs, weight, bias, list(layer.stride), padding, list(layer.dilation),
            False, [0] * (inputs.dim() - 2), layer.groups,
        )

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        inputs, weight = ctx.saved_tensors
        padding, layer, recorder = ctx.padding, ctx.layer, ctx.recorder
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad_output.contiguous(), inputs, weight, None, list(layer.stride), padding,
                list(layer.dilation), False, [0] * (inputs.dim() - 2), layer.groups, [True, False, False],
            )[0]
        # per-sample gradients need the batch-mean factor undone: put it on whichever is
        # smaller, the output gradient or the per-sample weight gradients
        scale = recorder.scale(inputs.shape[0])
        scale_after = scale
        if ctx.needs_input_grad[1] and grad_output.numel() <= inputs.shape[0] * weight.numel():
            grad_output, scale_after = _scaled(grad_output, scale, in_place=False), 1
        if ctx.needs_input_grad[1]:
            grad_weight = per_sample_weight_grad(
                inputs, grad_output, weight, stride=layer.stride, padding=padding,
                dilation=layer.dilation, groups=layer.groups,
            )
            recorder.record(layer.weight, _scaled(grad_weight, scale_after))
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.reshape(*grad_output.shape[:2], -1).sum(dim=2)
            recorder.record(layer.bias, _scaled(grad_bias, scale_after))
        return grad_input, None, None, None, None, None


def _conv_apply(layer: nn.Module, inputs: torch.Tensor, recorder: _Recorder) -> torch.Tensor:
    if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        return _PerSampleConv.apply(inputs, layer.weight, layer.bias, list(layer.padding), layer, recorder)
    # other padding modes and string padding: pad explicitly (as nn.Conv does), then convolve
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    padded = F.pad(inputs, layer._reversed_padding_repeated_twice, mode=mode)
    return _PerSampleConv.apply(padded, layer.weight, layer.bias, [0] * (inputs.dim() - 2), layer, recorder)


class _PerSampleGroupNorm(torch.autograd.Function):
    """GroupNorm; backward: input gradient, and per-sample weight and bias gradients."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, layer, recorder):  # type: ignore[override]
        inputs = inputs.contiguous()
        output, mean, rstd = group_norm_forward(inputs, weight, bias, layer.num_groups, layer.eps)
        ctx.save_for_backward(inputs, weight, mean, rstd)
        ctx.layer, ctx.recorder = layer, recorder
        return output

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        inputs, weight, mean, rstd = ctx.saved_tensors
        layer, recorder = ctx.layer, ctx.recorder
        grad_input, grad_weight, grad_bias = group_norm_backward_per_sample(
            grad_output, inputs, mean, rstd, weight, layer.num_groups,
            input_grad=ctx.needs_input_grad[0], weight_grad=ctx.needs_input_grad[1],
            bias_grad=ctx.needs_input_grad[2],
        )
        scale = recorder.scale(inputs.shape[0])
        if grad_weight is not None:
            recorder.record(layer.weight, _scaled(grad_weight, scale))
        if grad_bias is not None:
            recorder.record(layer.bias, _scaled(grad_bias, scale))
        return grad_input, None, None, None, None


def _group_norm_apply(layer: nn.Module, inputs: torch.Tensor, recorder: _Recorder) -> torch.Tensor:
    return _PerSampleGroupNorm.apply(inputs, layer.weight, layer.bias, layer, recorder)


def _apply_for(layer: nn.Module) -> Callable | None:
    if isinstance(layer, CONV_TYPES):
        return _conv_apply
    if isinstance(layer, nn.GroupNorm) and layer.affine:
        return _group_norm_apply
    return None


def _per_sample_forward(layer: nn.Module, apply: Callable, recorder: _Recorder) -> Callable:
    plain_forward = type(layer).forward.__get__(layer)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        trainable = [p for p in (layer.weight, layer.bias) if p is not None and p.requires_grad]
        if not (trainable and layer.training and torch.is_grad_enabled() and recorder.enabled):
            return plain_forward(inputs)  # as Opacus's hooks: nothing recorded outside training
        count_forward(trainable)
        return apply(layer, inputs, recorder)
    return forward


def _remove_opacus_hooks(grad_sample_module: GradSampleModule, layers: list[nn.Module]) -> None:
    owned = {id(hooks) for layer in layers for hooks in (layer._forward_hooks, layer._backward_hooks)}
    handles = grad_sample_module.autograd_grad_sample_hooks
    kept = []
    for handle in handles:
        hooks = handle.hooks_dict_ref()
        if hooks is not None and id(hooks) in owned:
            handle.remove()
        else:
            kept.append(handle)
    handles[:] = kept


def use_per_sample_layers(grad_sample_module: GradSampleModule) -> Callable[[], None]:
    """Switch an Opacus hooks-mode ``GradSampleModule`` to per-sample layers.

    Its convolutions and affine GroupNorms lose their Opacus hooks and compute
    their per-sample gradients in their own backward; the remaining samplers store their
    results without a copy (:func:`~mpdrm.privacy.grad_sample_store.store_without_copy`).
    Only this instance changes: Opacus's global sampler registry is left alone.

    Returns
    -------
    Callable[[], None]
        Restores the layers' ordinary forward (call it before unwrapping the model).
    """
    grad_sample_module.GRAD_SAMPLERS = {
        kind: store_without_copy(sampler) for kind, sampler in type(grad_sample_module).GRAD_SAMPLERS.items()
    }
    applies = {m: apply for m in grad_sample_module._module.modules() if (apply := _apply_for(m)) is not None}
    layers = list(applies)
    _remove_opacus_hooks(grad_sample_module, layers)
    recorder = _Recorder(grad_sample_module)
    for layer, apply in applies.items():
        layer.forward = _per_sample_forward(layer, apply, recorder)

    def restore() -> None:
        for layer in layers:
            layer.__dict__.pop("forward", None)
    return restore
