"""Build a site's model and assemble its weights: global shared part + own local part."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

import mpdrm
from mpdrm.config import MPDRMConfig

from .runconfig import dataclass_kwargs, section
from .sharing import subject_dependent_names

_SITE_SPECIFIC: dict[str, set[str]] = {}


def model_overrides(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(size, overrides)`` of the run config's ``model.*`` section.

    Only the fields present in the run config override the named size's defaults.
    """
    values = section(cfg, "model")
    size = str(values.pop("size", "tiny"))
    overrides = dataclass_kwargs(MPDRMConfig, values)
    overrides["task"] = str(cfg.get("data.task", overrides.get("task", "regression")))
    overrides.pop("num_subjects", None)
    return size, overrides


def build_site_model(cfg: Mapping[str, Any], num_subjects: int) -> torch.nn.Module:
    """The MPDRM model of the run, with ``num_subjects`` personality prototypes."""
    size, overrides = model_overrides(cfg)
    return mpdrm.build_model(size, num_subjects=num_subjects, **overrides)


def site_specific_names(cfg: Mapping[str, Any]) -> set[str]:
    """Names whose shape depends on the site's subjects (cached per model config)."""
    size, overrides = model_overrides(cfg)
    key = repr((size, sorted(overrides.items())))
    if key not in _SITE_SPECIFIC:
        _SITE_SPECIFIC[key] = subject_dependent_names(size, **overrides)
    return _SITE_SPECIFIC[key]


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
