"""A site's model from the run config, and what of it leaves the site in each mode.

``mpdrm`` (the product): exactly the shared names of :func:`mpdrm.partition`, the single
source of truth; the personality branch never leaves the site.
``fedavg_full`` (baseline: what a plain Flower user would do): every state_dict key except
those whose shape depends on the site's own subjects (the per-subject prototypes, which
cannot be averaged across sites with different patients).
``local_only`` (baseline: no federation): nothing.

Flower-free: used by the client (what to send) and the server (what to accept).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

import mpdrm
from mpdrm.config import MPDRMConfig

from .names import MODES
from .runconfig import run_model_config


def build_site_model(cfg: Mapping[str, Any], num_subjects: int) -> torch.nn.Module:
    """The MPDRM model of the run, with ``num_subjects`` personality prototypes."""
    return mpdrm.build_model(run_model_config(cfg, num_subjects))


def run_shared_names(model: torch.nn.Module, cfg: Mapping[str, Any]) -> list[str]:
    """The names that leave a site of this run (mode ``mode``; see :func:`shared_names`)."""
    mode = str(cfg["mode"])
    skip = site_specific_names(run_model_config(cfg)) if mode == "fedavg_full" else None
    return shared_names(model, mode, skip)


_SITE_SPECIFIC: dict[str, set[str]] = {}


def site_specific_names(config: MPDRMConfig) -> set[str]:
    """Names whose shape depends on the site's subjects (cached per model config)."""
    key = repr(sorted((k, v) for k, v in config.to_dict().items() if k != "num_subjects"))
    if key not in _SITE_SPECIFIC:
        _SITE_SPECIFIC[key] = subject_dependent_names(config)
    return set(_SITE_SPECIFIC[key])


def load_weights(model: torch.nn.Module, *parts: Mapping[str, torch.Tensor]) -> None:
    """Copy the given name -> tensor parts into ``model`` (each name must exist, shapes must match)."""
    state = model.state_dict()
    for part in parts:
        for name, value in part.items():
            if name not in state:
                raise KeyError(f"weight {name!r} is not a parameter or buffer of the model")
            if tuple(state[name].shape) != tuple(value.shape):
                raise ValueError(f"weight {name!r}: shape {tuple(value.shape)} != model's {tuple(state[name].shape)}")
            state[name].copy_(value)


def subject_dependent_names(size_or_config: Any, **overrides: Any) -> set[str]:
    """Keys whose tensor shape depends on ``num_subjects`` (built twice, compared)."""
    overrides = {k: v for k, v in overrides.items() if k != "num_subjects"}
    a = mpdrm.build_model(size_or_config, num_subjects=2, **overrides).state_dict()
    b = mpdrm.build_model(size_or_config, num_subjects=3, **overrides).state_dict()
    return {k for k in a if a[k].shape != b[k].shape}


def shared_names(model: torch.nn.Module, mode: str, site_specific: set[str] | None = None) -> list[str]:
    """Sorted names that may leave the site in ``mode``.

    Parameters
    ----------
    model : torch.nn.Module
        The site's model.
    mode : str
        One of :data:`MODES`.
    site_specific : set of str, optional
        For ``fedavg_full``: names never shared (see :func:`subject_dependent_names`).
    """
    if mode == "mpdrm":
        return list(mpdrm.partition(model)[0])
    if mode == "fedavg_full":
        skip = site_specific or set()
        return sorted(k for k in model.state_dict() if k not in skip)
    if mode == "local_only":
        return []
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def outbound_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The state that leaves the site: ``mpdrm.shared_state`` restricted/extended to ``names``.

    In ``mpdrm`` mode ``names`` equals the partition's shared list and the result is
    exactly :func:`mpdrm.shared_state`.
    """
    if names == list(mpdrm.partition(model)[0]):
        state = mpdrm.shared_state(model)
    else:
        state = model.state_dict()
    return {k: state[k].detach().cpu().contiguous() for k in names}


def kept_names(model: torch.nn.Module, names: list[str]) -> list[str]:
    """Names the site keeps (everything not in ``names``)."""
    shared = set(names)
    return sorted(k for k in model.state_dict() if k not in shared)


def check_inbound(incoming: Mapping[str, Any], names: list[str], source: str = "server") -> None:
    """Fail loudly if the arrays from the server are not exactly ``names``."""
    got, want = set(incoming), set(names)
    if got != want:
        extra, missing = sorted(got - want)[:5], sorted(want - got)[:5]
        raise ValueError(f"arrays from {source} do not match the shared names: extra {extra}, missing {missing}")
