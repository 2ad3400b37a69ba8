"""Command-line overrides of ``mpdrm-simulate`` checked against the schema before Hydra runs.

Hydra refuses an unknown key too, but without saying what was meant; this names the
closest valid key (``trian.lr`` -> ``train.lr``).
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

from mpdrm.contract.runconfig import suggestion
from mpdrm.contract.schema import RunSchema

#: Config groups (folders of ``conf/``): ``model=base`` selects a file, not a key.
GROUPS = tuple(sorted(p.name for p in (Path(__file__).parent / "conf").iterdir() if p.is_dir()))


def schema_paths(cls: type = RunSchema, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the schema, sections included (``train``, ``train.lr``, ...)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        yield path
        if dataclasses.is_dataclass(hints[f.name]):
            yield from schema_paths(hints[f.name], f"{path}.")


def _free_form(path: str) -> bool:
    """Keys under a free-form mapping (the Flower aggregator's keywords)."""
    return path.startswith("strategy.options.")


def check_overrides(argv: Sequence[str]) -> str | None:
    """Why the command line's overrides cannot apply, or ``None``.

    Flags (``--cfg job``), Hydra's own keys (``hydra.*``) and additions or deletions
    (``+key``, ``~key``) are left to Hydra.
    """
    known = set(schema_paths()) | set(GROUPS)
    problems = []
    for arg in argv:
        if arg.startswith(("-", "+", "~", "hydra.", "hydra/")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].strip()
        if key not in known and not _free_form(key):
            problems.append(f"unknown config key {key!r}{suggestion(key, sorted(known))}")
    return "; ".join(problems) or None
