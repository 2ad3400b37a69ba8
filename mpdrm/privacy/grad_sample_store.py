"""Handing per-sample gradients to Opacus 1.6 the way its hooks do, without its copies.

Opacus's hooks accumulate a parameter's per-sample gradients of one backward pass in
``param._current_grad_sample`` and, once every forward use of the parameter has been
backpropagated (``param._forward_counter`` back at 0), promote them to
``param.grad_sample``, where ``DPOptimizer`` clips them. These helpers follow the same
protocol, so per-sample gradients computed outside Opacus's hooks mix with Opacus's own.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from opacus.grad_sample.grad_sample_module import promote_current_grad_sample
from torch import nn


def _add_pending(param: nn.Parameter, grad_sample: torch.Tensor) -> None:
    pending = getattr(param, "_current_grad_sample", None)
    param._current_grad_sample = grad_sample if pending is None else pending + grad_sample


def count_forward(params: Iterable[nn.Parameter]) -> None:
    """Note one more forward use of each parameter (Opacus's ``capture_activations_hook``)."""
    for param in params:
        param._forward_counter += 1


def record_grad_sample(param: nn.Parameter, grad_sample: torch.Tensor, *, allow_accumulation: bool) -> None:
    """Add one backward use's per-sample gradients (B, *param.shape) to ``param``.

    The last use of the pass promotes the sum to ``param.grad_sample``. A second backward
    pass before the optimizer step is refused unless ``allow_accumulation`` (Poisson
    sampling forbids it: the accounting assumes one batch per step).
    """
    _add_pending(param, grad_sample)
    param._forward_counter -= 1
    if param._forward_counter == 0:
        promote_current_grad_sample(param)
    if not allow_accumulation and isinstance(param.grad_sample, list) and len(param.grad_sample) > 1:
        raise ValueError(
            "Poisson sampling is not compatible with gradient accumulation: call "
            "optimizer.step() after every forward/backward pass"
        )


def store_without_copy(sampler: Callable) -> Callable:
    """Wrap an Opacus grad sampler so that its per-sample gradients are stored as they are.

    Opacus 1.6 (``create_or_accumulate_grad_sample``) allocates a zero tensor of the full
    per-sample shape for every parameter and copies the sampler's result into it. A
    full-batch result is stored directly as the pending ``_current_grad_sample`` instead
    (summed out of place when a module runs twice in one pass); anything else (a shorter
    result) still goes through Opacus.
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
            _add_pending(param, grad_sample)
        return rest
    return sample
