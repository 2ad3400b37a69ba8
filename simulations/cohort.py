"""The cohort a simulation runs on: a given folder, or the default synthetic one (cached)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COMPLETE_MARK = ".complete"


def cohort_key(params: Mapping[str, Any]) -> str:
    """Short stable hash of the generation parameters."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:12]


def ensure_synthetic_cohort(cache_dir: Path, params: Mapping[str, Any], workers: int = 1) -> Path:
    """Return the synthetic cohort for ``params``, generating it once under ``cache_dir``.

    Generation goes to a temporary sibling folder that is renamed into place when
    complete, so an interrupted generation is never reused.

    Parameters
    ----------
    cache_dir : Path
        Root of the cache (``~/.cache/fedmpdrm`` by default).
    params : Mapping
        Keyword arguments of ``mpdrm.data.synth.generate_cohort`` (``sites``, ``seed``...).
    workers : int
        Rendering processes.
    """
    from mpdrm.data.synth import generate_cohort

    target = Path(cache_dir).expanduser() / "cohorts" / f"synthetic-{cohort_key(params)}"
    if (target / COMPLETE_MARK).is_file():
        print(f"[fedmpdrm] reusing the synthetic cohort {target}", flush=True)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[fedmpdrm] generating the synthetic cohort {target} ({dict(params)})", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        generate_cohort(tmp, workers=workers, progress=True, **dict(params))
        (tmp / COMPLETE_MARK).write_text(json.dumps(dict(params), default=str) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def score_max_of(cohort: Path, default: float = 27.0) -> float:
    """The scale maximum declared by ``cohort.json`` (else ``default``)."""
    meta = Path(cohort) / "cohort.json"
    if meta.is_file():
        value = json.loads(meta.read_text()).get("score_max")
        if value:
            return float(value)
    return default


def prepare_cohort(cohort: Path, prepare_cfg: Any, workers: int) -> None:
    """Prepare (or reuse the clip cache of) every site of the cohort."""
    from mpdrm.data.prepare import prepare_site

    from client.site import cohort_sites

    for site in cohort_sites(Path(cohort)):
        result = prepare_site(site, prepare_cfg, workers=workers, progress=True)
        if not result.ok:
            raise RuntimeError(f"{site}: no usable video after preparation (see {site}/.mpdrm-cache/report.json)")


def oracle_reference(cohort: Path) -> dict[str, Any] | None:
    """Normalised reference errors of a synthetic cohort (``oracle.json``): the oracle floor,
    the habit-blind oracle and the constant (mean-score) predictor; ``None`` if absent."""
    path = Path(cohort) / "oracle.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    ref = {"oracle": data.get("normalised")}
    for key in ("habit_blind", "constant"):
        if isinstance(data.get(key), dict):
            ref[key] = data[key].get("normalised")
    return {k: v for k, v in ref.items() if v}
