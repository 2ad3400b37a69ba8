"""``summary.json``: the run's config, shared/local keys, per-round metrics and bytes.

Shape (docs/architecture.md, section 7)::

    {"config": {...}, "shared_keys": [...], "local_keys": [...], "mode": "mpdrm",
     "sites": {"<site id>": "<site name>"},
     "initial": {"eval": {..., "per_site": {...}}, "wall_seconds": s},  # untrained model (round 0)
     "rounds": [{"round": 1, "bytes_up": n, "bytes_down": n, "train": {...},
                 "eval": {..., "per_site": {"<site>": {...}}}, "rejected": [...],
                 "wall_seconds": s}],                    # the run's clock when the round ended
     "final": {..., "per_site": {...}}, "wall_seconds": s,
     "engine_seconds": s, "process_seconds": s}          # mpdrm-simulate only (see below)

``wall_seconds`` is the ServerApp's (or the centralized loop's) clock since it started,
carried over a resume; ``mpdrm-simulate`` adds the simulation engine's whole life
(``engine_seconds``: Ray start, the ServerApp, shut-down) and its own (``process_seconds``:
cohort preparation included), both of its last invocation, so engine start-up is
``engine_seconds - wall_seconds`` for a run that was not resumed.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpdrm.persistence import atomic_write_bytes

SUMMARY_FILE = "summary.json"


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (strict JSON), keys strings."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value


def rename_sites(block: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Copy of a train/eval block whose ``per_site`` keys are site names (when known)."""
    out = dict(block)
    if "per_site" in out:
        out["per_site"] = {names.get(str(k), str(k)): v for k, v in out["per_site"].items()}
    return out


def new_summary(config: Mapping[str, Any], shared_keys: list[str], local_keys: list[str], mode: str, sites: Mapping[str, str]) -> dict[str, Any]:
    """An empty summary."""
    return {
        "config": dict(config),
        "mode": mode,
        "shared_keys": list(shared_keys),
        "local_keys": list(local_keys),
        "sites": dict(sites),
        "initial": None,
        "rounds": [],
        "final": None,
        "wall_seconds": 0.0,
    }


def round_entry(round_log: Mapping[str, Any], sites: Mapping[str, str]) -> dict[str, Any]:
    """A ``rounds[]`` entry from a strategy round log (``RoundLog.to_dict()``)."""
    entry = dict(round_log)
    entry["train"] = rename_sites(entry.get("train", {}), sites)
    entry["eval"] = rename_sites(entry.get("eval", {}), sites)
    if entry.get("robust") is not None:  # bounded influence: flagged sites by name too
        entry["robust"] = rename_sites(entry["robust"], sites)
        entry["robust"]["flagged"] = [sites.get(str(s), str(s)) for s in entry["robust"].get("flagged", [])]
    return entry


def add_round(summary: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Append (or replace) the entry of its round and update ``final``."""
    summary["rounds"] = [r for r in summary["rounds"] if r["round"] != entry["round"]] + [dict(entry)]
    summary["rounds"].sort(key=lambda r: r["round"])
    summary["final"] = dict(summary["rounds"][-1]["eval"])


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``run_dir/summary.json`` atomically (strict JSON)."""
    path = Path(run_dir) / SUMMARY_FILE
    atomic_write_bytes(path, (json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n").encode())
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/summary.json``."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
