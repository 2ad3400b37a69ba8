"""The flat run configuration both Flower apps read, derived from :mod:`mpdrm.contract.schema`.

Flower's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``, or the
simulation harness) holds only ``bool | int | float | str`` values under dotted keys:
``<section>.<field>`` for the schema's sections, a field's ``flat`` name where it has one
(``rounds`` -> ``num-server-rounds``). ``None`` travels as ``""`` and lists as JSON
strings; :func:`decode` is the one decoder back. :func:`merged` fills the schema's
defaults and refuses a key the schema does not know, naming the closest valid one.

Flower-free on purpose: the server and the client both use it.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from mpdrm.config import MPDRMConfig
from mpdrm.data.prepare import PrepareConfig

from .schema import FLAT, SIMULATION_ONLY, ModelSection, PrepareSection, RunSchema, model_config, prepare_config

T = TypeVar("T")

Scalar = bool | int | float | str


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


def decode(value: Any, annotation: Any) -> Any:
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
    return {k: decode(v, hints.get(k, Any)) for k, v in values.items() if k in names}


def build(cls: type[T], cfg: Mapping[str, Any], prefix: str, **extra: Any) -> T:
    """Instantiate dataclass ``cls`` from the run-config section ``prefix``."""
    kwargs = dataclass_kwargs(cls, section(cfg, prefix))
    kwargs.update(extra)
    return cls(**kwargs)


#: Prefix of the free-form keywords of the Flower aggregator (``strategy.options``).
OPTIONS_PREFIX = "strategy.options."


@dataclass(frozen=True)
class FlatKey:
    """One key of the flat run config: its name, where it sits in the schema, its type."""

    key: str
    path: tuple[str, ...]
    annotation: Any


def _walk(cls: type, path: tuple[str, ...]) -> Iterator[FlatKey]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if f.metadata.get(SIMULATION_ONLY) or typing.get_origin(annotation) is dict:
            continue
        if dataclasses.is_dataclass(annotation):
            yield from _walk(annotation, (*path, f.name))
            continue
        default_name = ".".join((*path, f.name)) if path else f.name.replace("_", "-")
        yield FlatKey(f.metadata.get(FLAT, default_name), (*path, f.name), annotation)


@lru_cache(maxsize=1)
def flat_keys() -> tuple[FlatKey, ...]:
    """Every key of the flat run config, in schema order."""
    return tuple(_walk(RunSchema, ()))


def encode(value: Any) -> Scalar:
    """A schema value as a Flower run-config scalar (``None`` -> ``""``, lists -> JSON)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"unsupported run-config value type {type(value).__name__}")


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name] if isinstance(tree, Mapping) else getattr(tree, name)
    return tree


def to_flat(run: Any) -> dict[str, Scalar]:
    """The flat run config of a :class:`RunSchema` (or a mapping of the same shape)."""
    out = {k.key: encode(_get(run, k.path)) for k in flat_keys()}
    out.update(flatten(_get(run, ("strategy", "options")) or {}, OPTIONS_PREFIX))
    return out


@lru_cache(maxsize=1)
def _defaults() -> tuple[tuple[str, Scalar], ...]:
    return tuple(to_flat(RunSchema()).items())


def flat_defaults() -> dict[str, Scalar]:
    """The flat run config of the schema's defaults (``[tool.flwr.app.config]``)."""
    return dict(_defaults())


def check_keys(cfg: Mapping[str, Any], source: str = "run config") -> None:
    """Refuse keys the schema does not know, naming the closest valid one.

    Raises
    ------
    ValueError
        ``"run config: unknown key 'trian.lr' (did you mean 'train.lr'?)"``.
    """
    known = [k.key for k in flat_keys()]
    unknown = [k for k in cfg if k not in known and not str(k).startswith(OPTIONS_PREFIX)]
    if unknown:
        raise ValueError("; ".join(f"{source}: unknown key {k!r}{suggestion(k, known)}" for k in sorted(unknown)))


def suggestion(key: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choices() -> dict[str, tuple[str, ...]]:
    from mpdrm.calibration import CALIBRATIONS  # noqa: PLC0415 (light: no torch)
    from mpdrm.config import DEPRESSION_INPUTS  # noqa: PLC0415
    from mpdrm.data.splits import PROTOCOLS  # noqa: PLC0415

    return {"eval.protocol": PROTOCOLS, "eval.calibration": CALIBRATIONS, "model.depression_input": DEPRESSION_INPUTS}


def check_choices(cfg: Mapping[str, Any], source: str = "run config") -> None:
    """Refuse a value outside its key's few allowed words (``eval.protocol``, ``eval.calibration``,
    ``model.depression_input``), so a typo stops the run before any site starts.

    Raises
    ------
    ValueError
        ``"run config: eval.calibration='affine' is not one of ('none', 'offset')"``.
    """
    bad = [f"{source}: {k}={cfg[k]!r} is not one of {allowed}" for k, allowed in _choices().items()
           if k in cfg and cfg[k] not in allowed]
    if bad:
        raise ValueError("; ".join(bad))


def merged(*configs: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The schema's flat defaults, then ``configs`` left to right (checked), then ``extra``.

    Parameters
    ----------
    *configs : Mapping, optional
        Run configs (``context.run_config``, the harness's overrides); unknown keys, and values
        outside a key's choices (:func:`check_choices`), are an error.
    extra : Mapping, optional
        Unchecked entries layered last (an instruction's ConfigRecord: ``server-round``, ...).
    """
    out: dict[str, Any] = flat_defaults()
    for cfg in configs:
        if cfg:
            check_keys(cfg)
            check_choices(cfg)
            out.update(dict(cfg))
    if extra:
        out.update(dict(extra))
    return out


def typed_section(cfg: Mapping[str, Any], prefix: str, cls: type) -> dict[str, Any]:
    """The ``prefix.*`` keys of a flat run config, decoded to the types of schema section ``cls``."""
    hints = typing.get_type_hints(cls)
    return {k: decode(v, hints.get(k, Any)) for k, v in section(cfg, prefix).items() if k in hints}


def run_model_config(cfg: Mapping[str, Any], num_subjects: int = 0) -> MPDRMConfig:
    """The :class:`MPDRMConfig` of a flat run config (``model.*`` and ``data.task``)."""
    values = typed_section(cfg, "model", ModelSection)
    return model_config(values, task=str(cfg.get("data.task", "regression")), num_subjects=num_subjects)


def run_prepare_config(cfg: Mapping[str, Any]) -> PrepareConfig:
    """The :class:`PrepareConfig` of a flat run config: ``prepare.*`` at the model's clip shape."""
    return prepare_config(typed_section(cfg, "prepare", PrepareSection), run_model_config(cfg))
