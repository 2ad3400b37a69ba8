"""The synthetic longitudinal cohort: determinism, valid sites, decodable videos, severity
effects visible in the rendered pixels, the confound knob, the oracle."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from mpdrm.data.check import check_site
from mpdrm.data.synth import generate_cohort
from mpdrm.data.synth.model import CHANNELS, HABITS


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".mpdrm-cache" not in p.parts}


def test_same_seed_same_bytes(tmp_path, tiny_cohort):
    again = generate_cohort(tmp_path / "again", sites=2, subjects=4, visits=2, seconds=3.0,
                            seed=7, workers=2)
    a, b = _files(tiny_cohort), _files(again)
    assert sorted(a) == sorted(b)
    assert sum(k.endswith(".mp4") for k in a) == 16
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    other = generate_cohort(tmp_path / "other", sites=2, subjects=4, visits=2, seconds=3.0,
                            seed=8)
    c = _files(other)
    assert a["site-01/manifest.csv"] != c["site-01/manifest.csv"]
    assert a["site-01/videos/S01-01_v1.mp4"] != c["site-01/videos/S01-01_v1.mp4"]


def test_layout_and_manifests_valid(tiny_cohort):
    meta = json.loads((tiny_cohort / "cohort.json").read_text())
    assert meta["sites"] == ["site-01", "site-02"]
    assert meta["score_max"] == 27 and meta["scale"] == "PHQ-9"
    assert meta["params"]["confound"] == 1.0 and meta["params"]["seed"] == 7
    oracle = json.loads((tiny_cohort / "oracle.json").read_text())
    for name in meta["sites"]:
        site = tiny_cohort / name
        res = check_site(site)
        assert res.ok, [str(p) for p in res.problems]
        assert res.summary["subjects"] == 4 and res.summary["videos"] == 8
        assert res.summary["detector"] == "none"          # site.json: face_crops
        with open(site / "manifest.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["video", "subject", "visit", "score", "label", "sex",
                                 "birth_year"]
        for r in rows:
            assert 0 <= int(r["score"]) <= 27
            assert r["label"] == str(int(int(r["score"]) >= 10))
    assert len(oracle["visits"]) == 16


def test_videos_decode_to_stated_frames_and_size(tiny_cohort):
    meta = json.loads((tiny_cohort / "cohort.json").read_text())
    sizes = set()
    for rel in meta["videos"]:
        cam = meta["cameras"][rel.split("/")[0]]
        cap = cv2.VideoCapture(str(tiny_cohort / rel))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(cam["fps"])
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (cam["height"], cam["width"], 3)
            n += 1
        cap.release()
        assert n == round(3.0 * cam["fps"])
        sizes.add((cam["width"], cam["height"], cam["fps"]))
    assert len(sizes) == 2            # the two sites' cameras differ


@pytest.fixture(scope="module")
def confound_pair(tmp_path_factory):
    """The same 10 subjects x 2 visits rendered at confound 0 and 2."""
    root = tmp_path_factory.mktemp("confound")
    return {c: generate_cohort(root / f"c{c}", sites=1, subjects=10, visits=2, seconds=4.0,
                               seed=3, confound=c, workers=2) for c in (0.0, 2.0)}


def _pixel_measures(path: Path) -> tuple[float, float, float]:
    """Measured from the decoded grayscale pixels only:
    - motion energy: mean absolute frame difference (head, smiles, blinks, brows together);
    - head speed: the face located in every frame by template matching (a central square of
      the first frame), mean displacement per frame in pixels;
    - mouth energy: mean absolute frame difference of the lower face in the head-stabilised
      crop (smiles open, widen and lift the mouth)."""
    cap = cv2.VideoCapture(str(path))
    prev, diffs, pos, mouths, tmpl = None, [], [], [], None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        g = cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (0, 0), 1.0)
        g = g.astype(np.float32)
        if prev is not None:
            diffs.append(float(np.abs(g - prev).mean()))
        prev = g
        h, w = g.shape
        s = int(0.45 * min(h, w))
        if tmpl is None:
            tmpl = g[h // 2 - s // 2:h // 2 + s // 2, w // 2 - s // 2:w // 2 + s // 2].copy()
        _, _, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(g, tmpl, cv2.TM_CCOEFF_NORMED))
        pos.append((x, y))
        mouths.append(g[y + s // 2 + s // 8:y + s, x + s // 8:x + s - s // 8])
    p = np.asarray(pos, np.float64)
    head = float(np.abs(np.diff(p, axis=0)).sum(1).mean())
    mouth = float(np.abs(np.diff(np.asarray(mouths), axis=0)).mean())
    return float(np.mean(diffs)), head, mouth


def _measure(cohort: Path):
    oracle = json.loads((cohort / "oracle.json").read_text())
    z = np.array([v["severity"] for v in oracle["visits"]])
    subj = [v["subject"] for v in oracle["visits"]]
    meas = np.array([_pixel_measures(cohort / v["video"]) for v in oracle["visits"]])
    return z, subj, meas


def test_severity_effects_in_rendered_motion(confound_pair):
    z, _, meas = _measure(confound_pair[0.0])
    assert z.max() - z.min() > 0.5
    rho_motion, rho_head, rho_mouth = (spearmanr(z, meas[:, i]).statistic for i in range(3))
    # measured with seeds 3, 4, 5: motion -0.94..; head -0.96, -0.97, -0.99; mouth -0.76,
    # -0.65, -0.67 (the mouth measure still carries some head roll)
    assert rho_motion < -0.8, rho_motion
    assert rho_head < -0.85, rho_head
    assert rho_mouth < -0.5, rho_mouth


def test_confound_moves_between_subject_variance(confound_pair):
    """Documented (mpdrm.data.synth.model): at fixed severity, a channel's between-subject
    variance is confound^2 * habit_scale^2 (exact on the parameters); in the pixels, the
    between-subject variance of motion energy left after regressing out severity grows."""
    for c, cohort in confound_pair.items():
        oracle = json.loads((cohort / "oracle.json").read_text())
        for v in oracle["visits"]:
            h = oracle["subjects"][v["subject"]]["habits"]
            for ch in CHANNELS:
                x = v["dynamics"][ch.name]
                u = math.log(x) if ch.kind == "log" else x
                resid = u - ch.base - ch.slope * v["severity"]
                assert resid == pytest.approx(c * ch.habit_scale * h[ch.habit], abs=1e-4)
    between = {}
    for c, cohort in confound_pair.items():
        z, subj, meas = _measure(cohort)
        y = np.log(meas[:, 0])
        a = np.vstack([z, np.ones_like(z)]).T
        r = y - a @ np.linalg.lstsq(a, y, rcond=None)[0]
        means = [r[[s == u for s in subj]].mean() for u in sorted(set(subj))]
        between[c] = float(np.var(means))
    assert between[2.0] > 10 * between[0.0], between     # measured: 0.39 vs 0.009
    # the subjects (habits, severity) are the same in both cohorts: only the knob differs
    o0 = json.loads((confound_pair[0.0] / "oracle.json").read_text())
    o2 = json.loads((confound_pair[2.0] / "oracle.json").read_text())
    assert o0["subjects"] == o2["subjects"]


def test_oracle(tiny_cohort, confound_pair):
    o = json.loads((tiny_cohort / "oracle.json").read_text())
    assert o["inversion_max_abs_error"] < 1e-9
    assert o["raw"]["rmse"] == pytest.approx(o["normalised"]["rmse"] * 27, abs=1e-3)
    assert 0.5 < o["expected_raw_rmse"] < 2.0                 # rater noise 1.5 points
    assert o["raw"]["rmse"] < o["habit_blind"]["raw"]["rmse"] < o["constant"]["raw"]["rmse"]
    assert set(o["per_site"]) == {"site-01", "site-02"}
    assert set(o["subjects"]["S01-01"]["habits"]) == set(HABITS)
    # without confound, knowing the person is worth nothing
    o0 = json.loads((confound_pair[0.0] / "oracle.json").read_text())
    assert o0["habit_blind"]["raw"]["rmse"] == pytest.approx(o0["raw"]["rmse"], abs=1e-3)


def test_reuse_and_refusal(tmp_path):
    kw = dict(sites=1, subjects=1, visits=1, seconds=1.0, seed=0)
    out = generate_cohort(tmp_path / "c", **kw)
    video = out / "site-01/videos/S01-01_v1.mp4"
    mtime = video.stat().st_mtime_ns
    assert generate_cohort(tmp_path / "c", **kw) == out
    assert video.stat().st_mtime_ns == mtime                  # reused, not rewritten
    generate_cohort(tmp_path / "c", **{**kw, "seed": 1})      # other params: replaced
    assert json.loads((out / "cohort.json").read_text())["params"]["seed"] == 1
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious/thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="holds no synthetic cohort"):
        generate_cohort(tmp_path / "precious", **kw)
    with pytest.raises(ValueError):
        generate_cohort(tmp_path / "x", sites=0)
