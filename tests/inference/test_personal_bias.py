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


def test_tracking_tells_a_model_reading_the_state_from_one_recognising_the_person():
    from benchmarks.personal_bias import split_change, tracking_figures

    rng = np.random.default_rng(1)
    truth = {f"s{i}": rng.uniform(0, 1, 3) for i in range(40)}  # three visits each

    def run(predict):
        preds = {s: [(v + 1, float(predict(s, v)), float(t[v])) for v in range(3)] for s, t in truth.items()}
        return tracking_figures(*split_change(preds))

    reader = run(lambda s, v: truth[s][v] + rng.normal(0, 0.02))
    memory = run(lambda s, v: truth[s][:2].mean() + rng.normal(0, 0.02))  # the person's past, whatever the visit
    assert reader["change_correlation"] > 0.95 and reader["change_gain"] == pytest.approx(1, abs=0.1)
    assert abs(memory["change_correlation"]) < 0.4 and abs(memory["change_gain"]) < 0.2
    direct = np.sqrt(np.mean([(t[:2].mean() - t[2]) ** 2 for t in truth.values()]))
    assert reader["memory_rmse"] == pytest.approx(direct) == memory["memory_rmse"]
