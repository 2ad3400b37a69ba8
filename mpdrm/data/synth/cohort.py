"""``generate_cohort``: the synthetic longitudinal cohort (docs/architecture.md, section 4).

Output::

    OUT_DIR/cohort.json          parameters, scale, score_max, label_threshold, site names,
                                 cameras, channel table (written last: marks completion)
    OUT_DIR/oracle.json          the error floor (see mpdrm.data.synth.oracle) + per-visit truth
    OUT_DIR/site-01/manifest.csv video, subject, visit, score, label, sex, birth_year
    OUT_DIR/site-01/site.json    {"scale", "score_max", "label_threshold", "face_crops": true}
    OUT_DIR/site-01/videos/S01-03_v2.mp4   (mp4v, the site camera's size and frame rate)

Randomness: every piece has its own generator seeded from ``(seed, purpose, site, subject,
visit)``, so the output is a pure function of the parameters (same seed, same bytes: the
mp4v encoder of OpenCV 4.x is deterministic, which the tests check), videos can be rendered
in any order or in parallel, and a subject's truth does not depend on ``confound`` or on how
many other subjects there are.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..cache import atomic_write_bytes, atomic_write_json
from .camera import Camera, sample_camera, site_formats
from .model import (HABITS, Subject, channel_table, sample_subject, score_from_severity,
                    site_severity_means, visit_dynamics)
from .oracle import compute_oracle
from .render import render_visit

GENERATOR_VERSION = 1
DEFAULTS = dict(sites=3, subjects=8, visits=3, seconds=8.0, seed=0, confound=1.0)


def _site_name(i: int) -> str:
    return f"site-{i + 1:02d}"


def _render_job(job: tuple) -> tuple[str, int]:
    path, cam_dict, sig, dyn, seconds, rng_key = job
    import cv2
    cv2.setNumThreads(1)
    cam = Camera(**cam_dict)
    out = render_visit(path, cam, sig, dyn, seconds, np.random.default_rng(rng_key))
    return path, out["frames"]


def _same_cohort(out_dir: Path, params: dict) -> bool:
    try:
        with open(out_dir / "cohort.json", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if meta.get("params") != params or meta.get("version") != GENERATOR_VERSION:
        return False
    for site in meta.get("sites", []):
        if not (out_dir / site / "manifest.csv").is_file():
            return False
    return (out_dir / "oracle.json").is_file() and all(
        (out_dir / p).is_file() for p in meta.get("videos", []))


@dataclass(frozen=True)
class _Spec:
    """The cohort's parameters exactly as passed to :func:`generate_cohort` (the files use
    them as given; :meth:`params` is the normalised record kept in cohort.json)."""

    sites: int
    subjects: int
    visits: int
    seconds: float
    seed: int
    confound: float
    rater_sd: float
    score_max: int
    scale: str
    label_threshold: int

    def params(self) -> dict:
        return dict(sites=int(self.sites), subjects=int(self.subjects), visits=int(self.visits),
                    seconds=float(self.seconds), seed=int(self.seed),
                    confound=float(self.confound), rater_sd=float(self.rater_sd),
                    score_max=int(self.score_max), scale=self.scale,
                    label_threshold=int(self.label_threshold))


@dataclass
class _Plan:
    """Everything drawn before rendering: per-site cameras and manifest rows, the render
    jobs, the per-visit truth and per-subject record for oracle.json, the video paths."""

    means: list[float]
    cameras: dict[str, dict] = field(default_factory=dict)
    jobs: list[tuple] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    subjects: dict[str, dict] = field(default_factory=dict)
    manifests: dict[str, list[list]] = field(default_factory=dict)
    videos: list[str] = field(default_factory=list)


def _check_counts(sites: int, subjects: int, visits: int, seconds: float,
                  confound: float) -> None:
    """Raise ValueError for an impossible cohort size, video length or confound."""
    if sites < 1 or subjects < 1 or visits < 1:
        raise ValueError("sites, subjects and visits must be >= 1")
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    if confound < 0:
        raise ValueError("confound must be >= 0")


def _clear_out_dir(out_dir: Path) -> None:
    """Make ``out_dir`` an empty place for a cohort: remove an earlier cohort's sites,
    cohort.json and oracle.json; refuse (FileExistsError) a non-empty folder that holds no
    cohort; create the folder."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "cohort.json").exists() and not any(out_dir.glob("site-*/manifest.csv")):
            raise FileExistsError(f"{out_dir} is not empty and holds no synthetic cohort; "
                                  "refusing to write into it")
        for p in out_dir.glob("site-*"):
            if p.is_dir():
                shutil.rmtree(p)
        for name in ("cohort.json", "oracle.json"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _subject_record(subj: Subject, name: str) -> dict:
    """A subject's entry in oracle.json ``subjects`` (floats rounded to 6 places)."""
    return {"site": name, "trajectory": subj.trajectory,
            "habits": {k: round(v, 6) for k, v in subj.habits.items()},
            "signature": {k: (round(v, 6) if isinstance(v, float) else v)
                          for k, v in asdict(subj.signature).items()},
            "severity": [round(z, 6) for z in subj.severity]}


def _plan_visit(plan: _Plan, out_dir: Path, spec: _Spec, name: str, cam: Camera,
                subj: Subject, s: int, j: int, v: int) -> None:
    """Draw visit ``v``'s rated score (generator ``[seed, 3, s, j, v]``) and add its
    manifest row, render job (generator key ``[seed, 4, s, j, v]``) and truth record."""
    seed, seconds = spec.seed, spec.seconds
    z = subj.severity[v]
    score = score_from_severity(np.random.default_rng([seed, 3, s, j, v]), z,
                                spec.score_max, spec.rater_sd)
    dyn = visit_dynamics(z, subj.habits, spec.confound)
    rel = f"videos/{subj.id}_v{v + 1}.mp4"
    plan.videos.append(f"{name}/{rel}")
    plan.manifests[name].append([rel, subj.id, v + 1, score,
                                 int(score >= spec.label_threshold), subj.sex, subj.birth_year])
    plan.jobs.append((str(out_dir / name / rel), cam.to_dict(), subj.signature, dyn,
                      float(seconds), [seed, 4, s, j, v]))
    plan.truth.append({"site": name, "subject": subj.id, "visit": v + 1,
                       "video": f"{name}/{rel}", "severity": z, "score": score,
                       "trajectory": subj.trajectory, "habits": subj.habits,
                       "dynamics": dyn, "frames": int(max(1, round(seconds * cam.fps)))})


def _plan_site(plan: _Plan, out_dir: Path, spec: _Spec, s: int,
               fmt: tuple[int, int, float]) -> None:
    """Draw site ``s``'s camera (generator ``[seed, 1, s]``) and its subjects (``[seed, 2,
    s, j]``), then plan each subject's visits in order."""
    name = _site_name(s)
    cam = sample_camera(np.random.default_rng([spec.seed, 1, s]), fmt)
    plan.cameras[name] = cam.to_dict()
    plan.manifests.setdefault(name, [])
    for j in range(spec.subjects):
        subj = sample_subject(np.random.default_rng([spec.seed, 2, s, j]), site=s, index=j,
                              visits=spec.visits, severity_mean=plan.means[s])
        plan.subjects[subj.id] = _subject_record(subj, name)
        for v in range(spec.visits):
            _plan_visit(plan, out_dir, spec, name, cam, subj, s, j, v)


def _plan_cohort(out_dir: Path, spec: _Spec) -> _Plan:
    """Draw the whole cohort but the videos: site severity means (generator ``[seed,
    11]``), site video formats (``[seed, 12]``), then each site in order."""
    means = site_severity_means(spec.sites, np.random.default_rng([spec.seed, 11]))
    formats = site_formats(spec.sites, np.random.default_rng([spec.seed, 12]))
    plan = _Plan(means)
    for s in range(spec.sites):
        _plan_site(plan, out_dir, spec, s, formats[s])
    return plan


def _render_all(jobs: list[tuple], workers: int, progress: bool) -> int:
    """Render every video (in a process pool when ``workers > 1``); return the frame total."""
    frames_total = 0
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods()
                             and sys.platform != "darwin" else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            for _, n in pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                frames_total += n
    else:
        it = jobs
        if progress:
            from tqdm import tqdm
            it = tqdm(jobs, desc="synth", unit="video", file=sys.stderr)
        for job in it:
            frames_total += _render_job(job)[1]
    return frames_total


def _write_sites(out_dir: Path, plan: _Plan, spec: _Spec) -> None:
    """Write each site's manifest.csv and site.json."""
    header = ["video", "subject", "visit", "score", "label", "sex", "birth_year"]
    for name, rows in plan.manifests.items():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        atomic_write_bytes(out_dir / name / "manifest.csv", buf.getvalue().encode())
        atomic_write_json(out_dir / name / "site.json",
                          {"scale": spec.scale, "score_max": spec.score_max,
                           "label_threshold": spec.label_threshold, "face_crops": True,
                           "synthetic": True, "camera": plan.cameras[name]})


def _write_oracle(out_dir: Path, plan: _Plan, spec: _Spec) -> dict:
    """Compute the error floor, add the per-visit truth (rounded, without habits) and the
    per-subject records, write oracle.json and return it."""
    oracle = compute_oracle(plan.truth, score_max=spec.score_max, rater_sd=spec.rater_sd,
                            confound=spec.confound)
    oracle["visits"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.items()
                         if k not in ("habits",)} | {"dynamics": {k: round(x, 6) for k, x in
                                                                  t["dynamics"].items()}}
                        for t in plan.truth]
    oracle["subjects"] = plan.subjects
    atomic_write_json(out_dir / "oracle.json", oracle)
    return oracle


def _write_meta(out_dir: Path, plan: _Plan, spec: _Spec, oracle: dict,
                frames_total: int) -> None:
    """Write cohort.json (last: its presence marks a complete cohort)."""
    manifests = plan.manifests
    meta = {"generator": "mpdrm.data.synth", "version": GENERATOR_VERSION,
            "params": spec.params(), "scale": spec.scale, "score_max": spec.score_max,
            "label_threshold": spec.label_threshold,
            "sites": list(manifests), "site_severity_means": dict(zip(manifests, plan.means)),
            "cameras": plan.cameras, "habits": list(HABITS), "channels": channel_table(),
            "videos": plan.videos, "frames_total": frames_total,
            "oracle": {"rmse": oracle["raw"]["rmse"], "mae": oracle["raw"]["mae"],
                       "rmse_normalised": oracle["normalised"]["rmse"],
                       "mae_normalised": oracle["normalised"]["mae"]}}
    atomic_write_json(out_dir / "cohort.json", meta)


def generate_cohort(out_dir: str | os.PathLike, *, sites: int = 3, subjects: int = 8,
                    visits: int = 3, seconds: float = 8.0, seed: int = 0,
                    confound: float = 1.0, rater_sd: float = 1.5, score_max: int = 27,
                    scale: str = "PHQ-9", label_threshold: int = 10, workers: int = 1,
                    reuse: bool = True, progress: bool = False) -> Path:
    """Write a synthetic cohort to ``out_dir`` and return its path.

    sites/subjects/visits: counts (subjects per site). seconds: length of every video.
    confound: strength of the habits on the severity channels (0 = none; 1 = a 1-SD habit
    shifts a channel like 0.3 of the severity range). rater_sd: SD of the rater noise in scale
    points. label: 1 when score >= label_threshold (PHQ-9 "moderate"). workers: rendering
    processes. reuse: return at once when ``out_dir`` already holds a complete cohort with the
    same parameters. An existing cohort with other parameters is replaced; a non-empty folder
    that is not a cohort is refused.
    """
    _check_counts(sites, subjects, visits, seconds, confound)
    out_dir = Path(out_dir)
    spec = _Spec(sites, subjects, visits, seconds, seed, confound, rater_sd, score_max, scale,
                 label_threshold)
    if reuse and _same_cohort(out_dir, spec.params()):
        return out_dir
    _clear_out_dir(out_dir)
    plan = _plan_cohort(out_dir, spec)
    frames_total = _render_all(plan.jobs, workers, progress)
    _write_sites(out_dir, plan, spec)
    oracle = _write_oracle(out_dir, plan, spec)
    _write_meta(out_dir, plan, spec, oracle, frames_total)
    return out_dir
