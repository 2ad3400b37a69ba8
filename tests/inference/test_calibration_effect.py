"""``benchmarks/calibration_effect.py``: a finished run scored with and without site calibration
reproduces the run's own final evaluation."""
from __future__ import annotations

import pytest

from benchmarks.calibration_effect import run_report


def test_the_calibrated_figures_are_the_runs_own(tiny_run) -> None:
    report = run_report(tiny_run.run_dir)
    final = tiny_run.summary["final"]
    assert report["overall"]["rmse_calibrated"] == pytest.approx(final["rmse"], abs=1e-6)
    for site, figures in report["sites"].items():
        assert figures["offset"] == pytest.approx(final["per_site"][site]["calibration_offset"], abs=1e-7)
        assert figures["rmse_calibrated"] == pytest.approx(final["per_site"][site]["rmse"], abs=1e-6)
        assert figures["rmse"] != pytest.approx(figures["rmse_calibrated"], abs=1e-6)  # the offset did something
