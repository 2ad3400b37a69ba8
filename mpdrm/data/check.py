"""``check_site``: validate a site folder in one pass and list every problem.

Manifest problems are reported at their manifest line; video problems too, with the video's
path first (``manifest.csv:7: videos/b.mp4: zero-byte file (0 bytes)``), so each line says
which file, which row and what is wrong. Checked per listed video: it exists, is not empty,
its container is complete (MP4 box walk), OpenCV decodes a frame, it is at least one clip
long at the configured frame rate, and - on the Haar path - a face is found in at least one
of a few frames sampled evenly over the video.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .face import HaarDetector
from .manifest import MANIFEST_NAME, ManifestError, Problem, read_manifest
from .prepare import PrepareConfig
from .video import VideoError, probe_video, resampled_count


@dataclass
class CheckResult:
    site_dir: Path
    problems: list[Problem] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary_line(self) -> str:
        s = self.summary
        if not s:
            return f"{self.site_dir.name}: no summary"
        lo, hi = s["score_min"], s["score_max_seen"]
        return (f"OK {self.site_dir.name}: {s['subjects']} subjects, {s['visits']} visits, "
                f"{s['videos']} videos, score {lo:g}-{hi:g} (mean {s['score_mean']:.1f}, "
                f"scale max {s['scale_max']:g}), {s['seconds']:.0f} s of video")


def _face_problem(path: Path, detector: HaarDetector, samples: int) -> str | None:
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        idx = np.unique(np.linspace(0, max(n - 1, 0), samples).round().astype(int))
        tried = 0
        for i in idx:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, frame = cap.read()
            if not ok:
                continue
            tried += 1
            if len(detector.detect(frame)):
                return None
        return (f"no face detected in any of {tried} frames sampled over the video "
                f"(Haar frontal-face cascade)")
    finally:
        cap.release()


def check_site(site_dir: str | os.PathLike, *, score_max: float | None = None,
               cfg: PrepareConfig | None = None, faces: bool | None = None,
               face_samples: int = 12) -> CheckResult:
    """Validate ``site_dir``. ``cfg`` gives the frame rate and clip length for the
    too-short check and the detector (``faces=None``: check faces when the resolved
    detector is ``haar``)."""
    site_dir = Path(site_dir)
    res = CheckResult(site_dir)
    if not site_dir.is_dir():
        res.problems.append(Problem("", None, "no such site folder"))
        return res
    cfg = (cfg or PrepareConfig()).resolve(site_dir)
    try:
        man = read_manifest(site_dir, score_max=score_max)
    except ManifestError as e:
        res.problems.append(e.problem)
        return res
    problems = list(man.problems)
    want_faces = (cfg.detector == "haar") if faces is None else faces
    detector = HaarDetector(detect_max_side=cfg.detect_max_side) if want_faces else None
    seconds = 0.0
    for row in man.rows:
        if not row.video or any("must be relative" in p for p in row.problems):
            continue
        path = site_dir / row.video
        def bad(msg: str) -> None:
            problems.append(Problem(MANIFEST_NAME, row.line,
                                    f"{row.video}: {msg}"))
        if not path.exists():
            bad("file not found")
            continue
        try:
            info = probe_video(path)
        except VideoError as e:
            bad(str(e))
            continue
        fps_in = info.fps or cfg.fps
        n = resampled_count(info.frame_count, fps_in, cfg.fps)
        seconds += info.frame_count / fps_in
        if n < cfg.window:
            bad(f"video too short: {n} frames at {cfg.fps:g} fps ({n / cfg.fps:.2f} s) < one "
                f"clip window of {cfg.window} frames ({cfg.window_seconds:.2f} s)")
            continue
        if detector is not None:
            msg = _face_problem(path, detector, face_samples)
            if msg:
                bad(msg)
    problems.sort(key=lambda p: (p.line or 0))
    res.problems = problems
    scores = [r.score for r in man.rows if r.score is not None]
    res.summary = {
        "subjects": len({r.subject for r in man.rows if r.subject}),
        "visits": len({(r.subject, r.visit) for r in man.rows if r.subject and r.visit is not None}),
        "videos": len(man.rows),
        "score_min": min(scores) if scores else float("nan"),
        "score_max_seen": max(scores) if scores else float("nan"),
        "score_mean": float(np.mean(scores)) if scores else float("nan"),
        "scale_max": man.score_max,
        "seconds": seconds,
        "detector": cfg.detector,
    }
    return res
