"""The run configuration: one flat ``key -> scalar`` mapping read by both apps.

Flower's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``, or the
simulation harness) holds only ``bool | int | float | str`` values under dotted keys.
This module turns such a mapping into the keyword arguments of the dataclasses of
``mpdrm`` (model, training, data preparation) without hard-coding their fields:
every key ``<section>.<field>`` whose field exists in the target dataclass is used.
Non-scalar values (lists) travel as JSON strings and are decoded here.

Flower-free on purpose: the server and the client both use it.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

Scalar = bool | int | float | str

#: Defaults of the keys the apps rely on; ``[tool.flwr.app.config]`` mirrors them.
DEFAULTS: dict[str, Scalar] = {
    "num-server-rounds": 6,
    "seed": 0,
    "mode": "mpdrm",
    "cohort": "",
    "state-root": "",
    "run-dir": "runs/server",
    "resume": False,
    "fraction-train": 1.0,
    "fraction-evaluate": 1.0,
    "min-sites": 2,
    "min-sites-wait": 120.0,
    "round-timeout": 3600.0,
    "data.test_fraction": 0.25,
    "data.score_max": 27.0,
    "data.task": "regression",
    "data.batch_size": 8,
    "data.eval_batch_size": 32,
    "data.workers": 0,
    "eval.personality": "clip",
    "model.size": "tiny",
    "strategy.aggregation": "fedavg",
}


def merged(*configs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge run configs left to right over :data:`DEFAULTS` (later wins)."""
    out: dict[str, Any] = dict(DEFAULTS)
    for cfg in configs:
        if cfg:
            out.update(dict(cfg))
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Flatten a nested mapping to dotted keys with Flower-compatible values.

    Parameters
    ----------
    tree : Mapping
        Nested configuration (e.g. a resolved Hydra config as a dict).
    prefix : str
        Prefix for the keys of this level.

    Returns
    -------
    dict
        ``{"a.b": value}``; lists/tuples become JSON strings, ``None`` becomes ``""``.
    """
    out: dict[str, Scalar] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        elif value is None:
            out[name] = ""
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            raise TypeError(f"run config key {name!r}: unsupported value type {type(value).__name__}")
    return out


def section(cfg: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Return the keys under ``prefix.`` with the prefix removed."""
    lead = f"{prefix}."
    return {k[len(lead):]: v for k, v in cfg.items() if k.startswith(lead)}


def _decode(value: Any, annotation: Any) -> Any:
    """Decode a run-config scalar into the type a dataclass field expects."""
    origin = typing.get_origin(annotation)
    wants_seq = annotation in (list, tuple) or origin in (list, tuple)
    if isinstance(value, str) and wants_seq:
        seq = json.loads(value)
        return tuple(seq) if (annotation is tuple or origin is tuple) else list(seq)
    if value == "" and type(None) in typing.get_args(annotation):
        return None
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def dataclass_kwargs(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the entries of ``values`` that name fields of dataclass ``cls``, decoded.

    Parameters
    ----------
    cls : type
        A dataclass type.
    values : Mapping
        Candidate values (e.g. ``section(cfg, "train")``).

    Returns
    -------
    dict
        Keyword arguments accepted by ``cls``.
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to raw values
        hints = {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: _decode(v, hints.get(k, Any)) for k, v in values.items() if k in names}


def build(cls: type[T], cfg: Mapping[str, Any], prefix: str, **extra: Any) -> T:
    """Instantiate dataclass ``cls`` from the run-config section ``prefix``."""
    kwargs = dataclass_kwargs(cls, section(cfg, prefix))
    kwargs.update(extra)
    return cls(**kwargs)
