"""``mpdrm-simulate dp=opacus`` and ``dp=central`` end to end through Flower's simulation
engine (Ray): tiny cohort, 2 rounds each; summary.json carries the privacy figures."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.federation.sim_helpers import TINY_OVERRIDES, make_tiny_cohort

pytestmark = [pytest.mark.dp, pytest.mark.simulation, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("dp-sim"), sites=2)


def _simulate(cohort: Path, run_dir: Path, *overrides: str) -> dict:
    command = [sys.executable, "-m", "simulations.simulate", f"cohort={cohort}", f"run_dir={run_dir}", "rounds=2",
               "resources.client_cpus=1", *TINY_OVERRIDES, *overrides]
    done = subprocess.run(command, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}, capture_output=True, text=True,
                          timeout=400, cwd=run_dir.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def test_opacus_simulation_reports_site_epsilon(cohort: Path, tmp_path: Path) -> None:
    summary = _simulate(cohort, tmp_path / "run", "dp=opacus", "dp.target_epsilon=4")
    assert summary["config"]["dp.mode"] == "opacus" and summary["config"]["dp.target_epsilon"] == 4
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and "stopped" not in summary
    assert set(summary["dp"]) == {"site-01", "site-02"}
    for site, totals in summary["dp"].items():
        assert set(totals) == {"noise_multiplier", "sample_rate", "steps", "delta", "epsilon", "unit", "patients"}
        assert totals["unit"] == "patient" and totals["patients"] >= 1  # the default unit of dp=opacus
        # calibrated for the run's 2 rounds: the target is reached, not passed
        assert 3.0 < totals["epsilon"] <= 4.0 and totals["noise_multiplier"] > 0 and totals["steps"] >= 2
        assert summary["rounds"][0]["epsilon"][site] < summary["rounds"][1]["epsilon"][site] == totals["epsilon"]
    assert all(r["aggregated"] and not r["rejected"] for r in summary["rounds"])
    assert math.isfinite(summary["final"]["rmse"])


def test_central_simulation_reports_server_epsilon(cohort: Path, tmp_path: Path) -> None:
    summary = _simulate(cohort, tmp_path / "run", "dp=central", "dp.noise_multiplier=2.0", "dp.clipping_norm=0.1")
    assert "dp" not in summary  # no client-side DP
    eps = [r["central_dp"]["epsilon"] for r in summary["rounds"]]
    assert 0 < eps[0] < eps[1] == summary["central_dp"]["epsilon"]
    assert summary["rounds"][1]["central_dp"]["releases"] == 2
    assert summary["central_dp"]["noise_multiplier"] == 2.0 and summary["central_dp"]["clipping_norm"] == 0.1
    assert all(r["aggregated"] for r in summary["rounds"])
