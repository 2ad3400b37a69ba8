"""Plain parameter names for Opacus-wrapped models.

Opacus's ``GradSampleModule`` keeps the model as ``_module``, so the wrapped model's
state_dict keys gain a ``_module.`` prefix. The site's partition
(``mpdrm.partition`` on the plain model) decides what leaves the site, so everything
going out must use the plain names.
"""
from __future__ import annotations

from typing import Mapping, TypeVar

import torch
from opacus.grad_sample import AbstractGradSampleModule

PREFIX = "_module."
V = TypeVar("V")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside any number of Opacus wrappers (itself if not wrapped)."""
    while isinstance(model, AbstractGradSampleModule):
        model = model._module
    return model


def plain_name(name: str) -> str:
    """``name`` without leading ``_module.`` prefixes."""
    while name.startswith(PREFIX):
        name = name[len(PREFIX):]
    return name


def plain_state_dict(state: Mapping[str, V] | torch.nn.Module) -> dict[str, V]:
    """State dict with plain names, from a (wrapped) module or a state dict.

    Raises
    ------
    ValueError
        If stripping the prefix makes two keys collide.
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    out: dict[str, V] = {}
    for key, value in state.items():
        name = plain_name(key)
        if name in out:
            raise ValueError(f"state dict key {key!r} collides with {name!r} once unwrapped")
        out[name] = value
    return out
