"""The memory layout the 3D convolutions run in: channels-last (NDHWC) on CPUs.

oneDNN's Conv3d kernels run faster on channels-last tensors on the CPU we measured (2-core
AMD EPYC without AVX-512: a tiny training step 1.16-1.21x, base 1.07-1.35x, a tiny forward pass
1.58x; the paper size 0.79-0.99x, i.e. slower: ``docs/benchmarks.md``, "Model cost"). The layout changes only the order of floating-point
sums: outputs agree to about 1e-6. The model is switched for the duration of a training or
scoring pass and switched back, so weights, optimizer state and files keep the standard
(contiguous) layout that safetensors and Flower's arrays expect.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: ``auto``: channels-last on the CPU, the standard layout elsewhere (not measured on GPUs).
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    """The torch layout that ``name`` (one of :data:`MEMORY_FORMATS`) means on ``device``."""
    if name not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {name!r}")
    if name == "channels_last" or (name == "auto" and device.type == "cpu"):
        return torch.channels_last_3d
    return torch.contiguous_format


@contextmanager
def model_in_format(model: nn.Module, layout: torch.memory_format) -> Iterator[nn.Module]:
    """Run the block with ``model``'s 5-D weights in ``layout``; back to contiguous after.

    ``Module.to`` swaps each parameter's data in place, so an optimizer built inside the block
    keeps referring to the same parameters."""
    if layout == torch.contiguous_format:
        yield model
        return
    model.to(memory_format=layout)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


def clips_in_format(batch: Mapping[str, Any], layout: torch.memory_format) -> dict[str, Any]:
    """``batch`` with its 5-D ``clips`` in ``layout`` (other entries unchanged)."""
    clips = batch.get("clips")
    if layout == torch.contiguous_format or not torch.is_tensor(clips) or clips.dim() != 5:
        return dict(batch)
    return {**batch, "clips": clips.contiguous(memory_format=layout)}


def contiguous_tensors(value: Any) -> Any:
    """``value`` (an optimizer state dict, nested dicts/lists) with every tensor contiguous."""
    if torch.is_tensor(value):
        return value.contiguous()
    if isinstance(value, Mapping):
        return {k: contiguous_tensors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [contiguous_tensors(v) for v in value]
    return value


__all__ = ["MEMORY_FORMATS", "clips_in_format", "contiguous_tensors", "model_in_format",
           "resolve_memory_format"]
