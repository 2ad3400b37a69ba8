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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..cache import atomic_write_bytes, atomic_write_json
from .camera import Camera, sample_camera, site_formats
from .model import (HABITS, channel_table, sample_subject, score_from_severity,
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
    if sites < 1 or subjects < 1 or visits < 1:
        raise ValueError("sites, subjects and visits must be >= 1")
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    if confound < 0:
        raise ValueError("confound must be >= 0")
    out_dir = Path(out_dir)
    params = dict(sites=int(sites), subjects=int(subjects), visits=int(visits),
                  seconds=float(seconds), seed=int(seed), confound=float(confound),
                  rater_sd=float(rater_sd), score_max=int(score_max), scale=scale,
                  label_threshold=int(label_threshold))
    if reuse and _same_cohort(out_dir, params):
        return out_dir
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

    means = site_severity_means(sites, np.random.default_rng([seed, 11]))
    formats = site_formats(sites, np.random.default_rng([seed, 12]))
    cameras: dict[str, dict] = {}
    jobs: list[tuple] = []
    truth: list[dict] = []
    subjects_out: dict[str, dict] = {}
    manifests: dict[str, list[list]] = {}
    video_paths: list[str] = []
    for s in range(sites):
        name = _site_name(s)
        cam = sample_camera(np.random.default_rng([seed, 1, s]), formats[s])
        cameras[name] = cam.to_dict()
        rows = manifests.setdefault(name, [])
        for j in range(subjects):
            subj = sample_subject(np.random.default_rng([seed, 2, s, j]), site=s, index=j,
                                  visits=visits, severity_mean=means[s])
            subjects_out[subj.id] = {"site": name, "trajectory": subj.trajectory,
                                     "habits": {k: round(v, 6) for k, v in subj.habits.items()},
                                     "signature": {k: (round(v, 6) if isinstance(v, float) else v)
                                                   for k, v in asdict(subj.signature).items()},
                                     "severity": [round(z, 6) for z in subj.severity]}
            for v in range(visits):
                z = subj.severity[v]
                score = score_from_severity(np.random.default_rng([seed, 3, s, j, v]), z,
                                            score_max, rater_sd)
                dyn = visit_dynamics(z, subj.habits, confound)
                rel = f"videos/{subj.id}_v{v + 1}.mp4"
                video_paths.append(f"{name}/{rel}")
                rows.append([rel, subj.id, v + 1, score, int(score >= label_threshold),
                             subj.sex, subj.birth_year])
                jobs.append((str(out_dir / name / rel), cam.to_dict(), subj.signature, dyn,
                             float(seconds), [seed, 4, s, j, v]))
                truth.append({"site": name, "subject": subj.id, "visit": v + 1,
                              "video": f"{name}/{rel}", "severity": z, "score": score,
                              "trajectory": subj.trajectory, "habits": subj.habits,
                              "dynamics": dyn,
                              "frames": int(max(1, round(seconds * cam.fps)))})

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

    header = ["video", "subject", "visit", "score", "label", "sex", "birth_year"]
    for name, rows in manifests.items():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        atomic_write_bytes(out_dir / name / "manifest.csv", buf.getvalue().encode())
        atomic_write_json(out_dir / name / "site.json",
                          {"scale": scale, "score_max": score_max,
                           "label_threshold": label_threshold, "face_crops": True,
                           "synthetic": True, "camera": cameras[name]})

    oracle = compute_oracle(truth, score_max=score_max, rater_sd=rater_sd, confound=confound)
    oracle["visits"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.items()
                         if k not in ("habits",)} | {"dynamics": {k: round(x, 6) for k, x in
                                                                  t["dynamics"].items()}}
                        for t in truth]
    oracle["subjects"] = subjects_out
    atomic_write_json(out_dir / "oracle.json", oracle)
    meta = {"generator": "mpdrm.data.synth", "version": GENERATOR_VERSION, "params": params,
            "scale": scale, "score_max": score_max, "label_threshold": label_threshold,
            "sites": list(manifests), "site_severity_means": dict(zip(manifests, means)),
            "cameras": cameras, "habits": list(HABITS), "channels": channel_table(),
            "videos": video_paths, "frames_total": frames_total,
            "oracle": {"rmse": oracle["raw"]["rmse"], "mae": oracle["raw"]["mae"],
                       "rmse_normalised": oracle["normalised"]["rmse"],
                       "mae_normalised": oracle["normalised"]["mae"]}}
    atomic_write_json(out_dir / "cohort.json", meta)
    return out_dir
