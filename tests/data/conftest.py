"""Fixtures for the site data pipeline tests: video writers, small site folders, a tiny
synthetic cohort (generated once per session)."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_video(path, frames, fps=15.0, fourcc="mp4v"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened()
    for f in frames:
        wr.write(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    wr.release()
    return path


def moving_blob_frames(n, size=(96, 96), seed=0):
    """Frames with no face: a gradient and a moving disc."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.tile(np.linspace(40, 200, w, dtype=np.float32), (h, 1))
    out = []
    for i in range(n):
        f = base.copy()
        cv2.circle(f, (int(w / 2 + 20 * np.sin(i / 5)), h // 2), 12, 90.0, -1)
        f += rng.normal(0, 2, f.shape).astype(np.float32)
        out.append(cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    return out


def write_manifest(site, rows, header=("video", "subject", "visit", "score")):
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    with open(site / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return site / "manifest.csv"


class Helpers:
    write_video = staticmethod(write_video)
    moving_blob_frames = staticmethod(moving_blob_frames)
    write_manifest = staticmethod(write_manifest)


@pytest.fixture(scope="session")
def helpers():
    return Helpers


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """2 sites x 4 subjects x 2 visits x 3 s (16 videos)."""
    from mpdrm.data.synth import generate_cohort
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "c", sites=2, subjects=4,
                           visits=2, seconds=3.0, seed=7)


@pytest.fixture(scope="session")
def prepared_cohort(tiny_cohort):
    """``tiny_cohort`` with both sites prepared with the default parameters (an explicit
    step: ``load_site`` never prepares)."""
    from mpdrm.data.prepare import prepare_site
    for site in ("site-01", "site-02"):
        prepare_site(tiny_cohort / site, progress=False)
    return tiny_cohort


@pytest.fixture()
def good_video_src(tmp_path_factory):
    """A valid 3 s, 15 fps video of moving shapes (no face), for the 'none' detector."""
    d = tmp_path_factory.mktemp("src")
    return write_video(d / "good.mp4", moving_blob_frames(45))
