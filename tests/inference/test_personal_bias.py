"""``benchmarks/personal_bias.py``: each subject's last visit is scored against the mean error
on its earlier visits."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.personal_bias import figures, split_bias, visit_residuals
from mpdrm.inference.model import load_model_dir


def test_the_last_visit_is_scored_and_the_earlier_ones_make_the_bias():
    residuals = {"a": [(3, 0.5), (1, 0.1), (2, 0.3)], "b": [(1, -0.2), (2, -0.4)], "c": [(1, 9.0)]}
    scored, biases = split_bias(residuals)
    assert scored.tolist() == [0.5, -0.4] and biases == pytest.approx([0.2, -0.2])


def test_a_pure_per_person_offset_vanishes_once_the_bias_is_removed():
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.2, 50)
    scored, biases = offsets + rng.normal(0, 0.01, 50), offsets
    f = figures(scored, biases)
    assert f["rmse"] > 0.1 and f["rmse_without_bias"] < 0.02 and f["bias_residual_correlation"] > 0.99


def test_every_video_of_a_site_gets_a_residual(tiny_run):
    model = load_model_dir(tiny_run.state_dir("site-01") / "model")
    residuals = visit_residuals(model, tiny_run.site_dir("site-01"))
    rows = (tiny_run.site_dir("site-01") / "manifest.csv").read_text().strip().splitlines()[1:]
    assert sum(len(v) for v in residuals.values()) == len(rows)
    assert all(math.isfinite(r) and -2 < r < 2 for visits in residuals.values() for _, r in visits)
