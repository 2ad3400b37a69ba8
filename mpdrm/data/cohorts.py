"""Cohorts on disk: the cached synthetic cohort, its preparation, its reference errors.

Flower-free: ``mpdrm-simulate`` (through :mod:`simulations.cohort`), the ClientApp of a
simulated site and any other caller share these functions.

The default cohort of a run with no ``cohort`` is the synthetic one of
:data:`DEFAULT_SYNTHETIC_COHORT`, generated once under the cache (``$FEDMPDRM_CACHE``,
else ``~/.cache/fedmpdrm``) and prepared once; a lock file next to it makes processes
that start together (simulated sites, the server) wait for one generation.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from mpdrm.contract.schema import RunSchema
from mpdrm.contract.sites import cohort_sites

COMPLETE_MARK = ".complete"
CACHE_ENV = "FEDMPDRM_CACHE"


def _default_cohort(run: RunSchema) -> Mapping[str, Any]:
    """``generate_cohort`` arguments of a run's synthetic cohort (``sites``, ``seed``, ``data.synth``)."""
    return MappingProxyType({"sites": run.sites, "seed": run.seed, **dataclasses.asdict(run.data.synth)})


#: Arguments of the default cohort: those of the default ``mpdrm-simulate`` run, from the
#: typed schema both read (:class:`mpdrm.contract.schema.RunSchema`).
DEFAULT_SYNTHETIC_COHORT: Mapping[str, Any] = _default_cohort(RunSchema())
#: The cache folder when ``$FEDMPDRM_CACHE`` is unset (the schema's ``cache_dir``).
DEFAULT_CACHE: str = RunSchema().cache_dir


def cohort_key(params: Mapping[str, Any]) -> str:
    """Short stable hash of the generation parameters."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """The cache folder: ``$FEDMPDRM_CACHE``, else ``~/.cache/fedmpdrm``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def synthetic_cohort_dir(cache_dir: Path, params: Mapping[str, Any]) -> Path:
    """Where the synthetic cohort of ``params`` lives under ``cache_dir`` (generated or not)."""
    return Path(cache_dir).expanduser() / "cohorts" / f"synthetic-{cohort_key(params)}"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing), across processes.

    Not re-entrant: a process that takes it twice waits for itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(cohort: Path) -> Path:
    return cohort.parent / f".{cohort.name}.lock"


def _generate(target: Path, params: Mapping[str, Any], workers: int) -> None:
    """Generate into a temporary sibling, renamed into place when complete."""
    from mpdrm.data.synth import generate_cohort

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


def ensure_synthetic_cohort(cache_dir: Path, params: Mapping[str, Any], workers: int = 1) -> Path:
    """Return the synthetic cohort for ``params``, generating it once under ``cache_dir``.

    An interrupted generation is never reused (it is renamed into place when complete);
    concurrent callers generate it once (a lock file next to it).

    Parameters
    ----------
    cache_dir : Path
        Root of the cache (``~/.cache/fedmpdrm`` by default).
    params : Mapping
        Keyword arguments of ``mpdrm.data.synth.generate_cohort`` (``sites``, ``seed``...).
    workers : int
        Rendering processes.
    """
    target = synthetic_cohort_dir(cache_dir, params)
    if not (target / COMPLETE_MARK).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(_lock_path(target)):
            if not (target / COMPLETE_MARK).is_file():
                _generate(target, params, workers)
                return target
    print(f"[fedmpdrm] reusing the synthetic cohort {target}", flush=True)
    return target


def score_max_of(cohort: Path, default: float = 27.0) -> float:
    """The scale maximum declared by ``cohort.json`` (else ``default``)."""
    meta = Path(cohort) / "cohort.json"
    if meta.is_file():
        value = json.loads(meta.read_text()).get("score_max")
        if value:
            return float(value)
    return default


def prepare_cohort(cohort: Path, prepare_cfg: Any, workers: int, score_max: float | None = None) -> None:
    """Prepare (or reuse the clip cache of) every site of the cohort.

    Parameters
    ----------
    cohort : Path
        The cohort folder.
    prepare_cfg : mpdrm.data.prepare.PrepareConfig
        The clip settings (part of the clip cache's key).
    workers : int
        Preparation processes.
    score_max : float, optional
        The run's scale maximum (``data.score_max``), when it is not the sites' own.
    """
    from mpdrm.data.prepare import prepare_site

    for site in cohort_sites(Path(cohort)):
        result = prepare_site(site, prepare_cfg, workers=workers, progress=True, score_max=score_max)
        if not result.ok:
            raise RuntimeError(f"{site}: no usable video after preparation (see {site}/.mpdrm-cache/report.json)")


def default_cohort_params(run_config: Mapping[str, Any], num_sites: int) -> dict[str, Any]:
    """Generation parameters of the default cohort of a run: ``num_sites`` sites, run seed.

    With 3 sites and seed 0 these are exactly :data:`DEFAULT_SYNTHETIC_COHORT`, so a
    ``flwr run`` of 3 simulated sites reuses the cohort of the default ``mpdrm-simulate``.
    """
    if int(num_sites) < 1:
        raise ValueError(f"the default cohort needs at least one site, not {num_sites}")
    seed = run_config.get("seed", "")
    seed = DEFAULT_SYNTHETIC_COHORT["seed"] if str(seed) == "" else int(seed)
    return {**DEFAULT_SYNTHETIC_COHORT, "sites": int(num_sites), "seed": seed}


def default_cohort_dir(run_config: Mapping[str, Any], num_sites: int) -> Path:
    """Where the default cohort of a run lives (no generation: it may not exist yet)."""
    return synthetic_cohort_dir(cache_root(), default_cohort_params(run_config, num_sites))


def run_cohort(run_config: Mapping[str, Any], num_sites: int, prepare_cfg: Any, workers: int = 2) -> Path:
    """The cohort folder of a simulated run: run config ``cohort``, else the default cohort.

    The default cohort (:func:`default_cohort_params`: as many sites as the simulation has
    partitions) is generated and prepared once under :func:`cache_root`; processes that
    call this together wait on a lock file and then reuse it (a ``.prepared-<key>`` mark
    per clip setting skips the preparation afterwards). A given ``cohort`` is returned as
    is (preparing it is the caller's business, as before).

    Parameters
    ----------
    run_config : Mapping
        Flat run config (``cohort``, ``seed``; the ``prepare.*`` keys are in ``prepare_cfg``).
    num_sites : int
        Number of partitions (simulated sites).
    prepare_cfg : mpdrm.data.prepare.PrepareConfig
        The clip settings the sites read with (built from the run config's ``prepare.*``
        by the caller, with the same builder the client uses).
    workers : int
        Generation and preparation processes.
    """
    given = str(run_config.get("cohort", "") or "")
    if given:
        return Path(given).expanduser()
    params = default_cohort_params(run_config, num_sites)
    cohort = synthetic_cohort_dir(cache_root(), params)
    mark = cohort / f".prepared-{cohort_key({'prepare': repr(prepare_cfg)})}"
    if not mark.is_file():
        ensure_synthetic_cohort(cache_root(), params, workers=workers)
        with file_lock(_lock_path(cohort)):
            if not mark.is_file():
                prepare_cohort(cohort, prepare_cfg, workers)
                mark.write_text(repr(prepare_cfg) + "\n")
    return cohort


def oracle_reference(cohort: Path, visits: Collection[tuple[str, str, int]] | None = None) -> dict[str, Any] | None:
    """Normalised reference errors of a synthetic cohort (``oracle.json``): the oracle floor,
    the habit-blind oracle and the constant (mean-score) predictor; ``None`` if absent.

    With ``visits`` (``(site, subject, visit)`` triples: the evaluated ones), on exactly those
    visits: RMSE of the oracle's and the habit-blind oracle's conditional-mean predictions and
    of the cohort's mean score (see :func:`references_on`).
    """
    path = Path(cohort) / "oracle.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if visits is not None:
        return references_on(data, visits)
    ref = {"oracle": data.get("normalised")}
    for key in ("habit_blind", "constant"):
        if isinstance(data.get(key), dict):
            ref[key] = data[key].get("normalised")
    return {k: v for k, v in ref.items() if v}


def references_on(oracle: Mapping[str, Any], visits: Collection[tuple[str, str, int]]) -> dict[str, Any]:
    """The references on the given visits of an ``oracle.json`` (normalised RMSE).

    ``oracle`` and ``habit_blind`` score each visit with the stored conditional-mean
    prediction (``oracle_score``, ``habit_blind_score``); ``constant`` with the mean score of
    the whole cohort. ``person_memory`` (only when every evaluated person has visits that are
    not evaluated: the ``visits`` and ``enrolled`` protocols) scores each visit with the mean
    score of that person's other visits, the ones a model trained on or was enrolled with: what
    a model gets that recognises *who* is on the video and reads nothing of their state.
    ``site_mean`` scores each visit with the mean score of its site's visits that are not
    evaluated: a site-calibrated model (``eval.calibration=offset``) that learned nothing.

    Raises
    ------
    KeyError
        A requested visit that the oracle does not list.
    """
    table = {(v["site"], v["subject"], int(v["visit"])): v for v in oracle["visits"]}
    missing = sorted(set(visits) - set(table))
    if missing:
        raise KeyError(f"visits not in oracle.json: {missing[:5]}")
    chosen = [table[k] for k in sorted(set(visits))]
    scale = float(oracle["score_max"])
    scores = np.array([v["score"] for v in chosen], np.float64)
    mean_score = float(np.mean([v["score"] for v in oracle["visits"]]))

    def rmse(pred: np.ndarray) -> dict[str, float]:
        return {"rmse": round(float(np.sqrt(np.mean((pred - scores) ** 2))) / scale, 5)}

    refs = {"oracle": rmse(np.array([v["oracle_score"] for v in chosen])),
            "habit_blind": rmse(np.array([v["habit_blind_score"] for v in chosen])),
            "constant": rmse(np.full_like(scores, mean_score))}
    memory = person_memory(oracle["visits"], set(visits))
    if memory is not None:
        refs["person_memory"] = rmse(np.array([memory[k] for k in sorted(set(visits))]))
    site = site_mean(oracle["visits"], set(visits))
    if site is not None:
        refs["site_mean"] = rmse(np.array([site[k] for k in sorted(set(visits))]))
    return refs


def site_mean(all_visits: Collection[Mapping[str, Any]], evaluated: Collection[tuple[str, str, int]]
              ) -> dict[tuple[str, str, int], float] | None:
    """Each evaluated visit -> the mean score of its site's visits that are not evaluated (what a
    site-calibrated model that learned nothing scores); ``None`` when a site has no such visit."""
    evaluated = set(evaluated)
    known: dict[str, list[float]] = {}
    for v in all_visits:
        if (v["site"], v["subject"], int(v["visit"])) not in evaluated:
            known.setdefault(v["site"], []).append(float(v["score"]))
    if any(k[0] not in known for k in evaluated):
        return None
    return {k: float(np.mean(known[k[0]])) for k in evaluated}


def person_memory(all_visits: Collection[Mapping[str, Any]], evaluated: Collection[tuple[str, str, int]]
                  ) -> dict[tuple[str, str, int], float] | None:
    """Each evaluated visit -> the mean score of the same person's visits that are not evaluated;
    ``None`` when some evaluated person has no such visit (e.g. held-out people)."""
    evaluated = set(evaluated)
    known: dict[tuple[str, str], list[float]] = {}
    for v in all_visits:
        key = (v["site"], v["subject"], int(v["visit"]))
        if key not in evaluated:
            known.setdefault(key[:2], []).append(float(v["score"]))
    if any(k[:2] not in known for k in evaluated):
        return None
    return {k: float(np.mean(known[k[:2]])) for k in evaluated}
