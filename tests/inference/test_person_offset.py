"""``benchmarks/person_offset.py``: a finished run's site models scored on the ``enrolled`` visits
without an offset, with the site's, and with each person's intake offset."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.person_offset import person_offsets, run_report
from mpdrm.contract.runconfig import merged
from mpdrm.contract.site_data import calibration_offset, eval_loader, personality_source, site_data
from mpdrm.inference.model import load_model_dir
from mpdrm.training import evaluate


def test_person_offsets_are_each_persons_mean_intake_error() -> None:
    prediction = np.array([0.2, 0.4, 0.5, 0.1])
    target = np.array([0.3, 0.6, 0.5, 0.5])
    subject = np.array([7, 7, 2, 2])
    assert person_offsets(prediction, target, subject) == pytest.approx({7: 0.15, 2: 0.2})


def test_the_site_offset_row_is_an_enrolled_evaluation(tiny_run) -> None:
    report = run_report(tiny_run.run_dir)
    config = json.loads((tiny_run.run_dir / "summary.json").read_text())["config"]
    cfg = merged({**config, "eval.protocol": "enrolled"})
    site = sorted(report["sites"])[0]
    model = load_model_dir(tiny_run.root / "state" / site / "model").model
    data = site_data(tiny_run.cohort / site, cfg)
    direct = evaluate(model, eval_loader(data.test, cfg), task="regression",
                      offset=calibration_offset(model, data, {**cfg, "eval.calibration": "offset"}) or 0.0,
                      **personality_source(data, cfg))
    assert report["sites"][site]["site"] == pytest.approx(direct["rmse"], abs=1e-6)
    assert report["sites"][site]["person"] != pytest.approx(report["sites"][site]["site"], abs=1e-6)
