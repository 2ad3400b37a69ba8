"""The single source of truth for which model state may leave a site.

Local (kept on the site): exactly the state_dict keys that start with ``personality.`` -- MPFN,
its projection head and its prototypes. Shared (aggregated): every other key. Parameters and
buffers alike; names are those of the bare MPDRM module (wrappers such as Opacus'
GradSampleModule are looked through).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .contract.names import LOCAL_PREFIX

__all__ = ["LOCAL_PREFIX", "is_local", "local_state", "partition", "shared_state", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside Opacus (``_module``) or DDP-style (``module``) wrappers."""
    seen = 0
    while seen < 8:
        inner = getattr(model, "_module", None)
        if not isinstance(inner, nn.Module):
            inner = model.module if type(model).__name__ == "DistributedDataParallel" else None
        if inner is None:
            return model
        model = inner
        seen += 1
    return model


def is_local(name: str) -> bool:
    return name.startswith(LOCAL_PREFIX)


def partition(model: nn.Module) -> tuple[list[str], list[str]]:
    """(shared_names, local_names): the model's state_dict keys, sorted, split by prefix."""
    keys = list(unwrap(model).state_dict().keys())
    shared = sorted(k for k in keys if not is_local(k))
    local = sorted(k for k in keys if is_local(k))
    return shared, local


def shared_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The shared entries of the state_dict, in sorted name order (tensors share storage with the
    model; clone them before changing them)."""
    state = unwrap(model).state_dict()
    shared, _ = partition(model)
    return OrderedDict((k, state[k]) for k in shared)


def local_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The local (``personality.*``) entries of the state_dict, in sorted name order."""
    state = unwrap(model).state_dict()
    _, local = partition(model)
    return OrderedDict((k, state[k]) for k in local)


def _load(model: nn.Module, state: dict[str, torch.Tensor], expected: list[str], what: str) -> None:
    got = set(state)
    want = set(expected)
    if got != want:
        missing = sorted(want - got)[:5]
        extra = sorted(got - want)[:5]
        raise KeyError(f"{what} state does not match the model: missing {missing}, unexpected {extra}")
    result = unwrap(model).load_state_dict(dict(state), strict=False)
    if result.unexpected_keys:
        raise KeyError(f"unexpected keys {result.unexpected_keys[:5]}")


def load_shared_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load exactly the shared names (no more, no fewer) into the model."""
    _load(model, state, partition(model)[0], "shared")


def load_local_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load exactly the local names (no more, no fewer) into the model."""
    _load(model, state, partition(model)[1], "local")
