"""The comparison modes write the same summary.json shape (one round each, no Ray).

fedavg_full sends the personality branch too (but never the per-subject prototypes),
local_only sends no arrays at all, centralized trains on the pooled data without Flower.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulations.centralized import run_centralized
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

KEYS = {"config", "mode", "shared_keys", "local_keys", "initial", "rounds", "final", "wall_seconds"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("modes"), sites=2)


def _config(cohort: Path, root: Path, mode: str) -> dict:
    return {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
            "num-server-rounds": 1, "mode": mode}


def _check_shape(summary: dict, mode: str) -> None:
    assert KEYS <= set(summary) and summary["mode"] == mode
    assert set(summary["final"]["per_site"]) == {"site-01", "site-02"}
    assert {"rmse", "mae", "pcc", "ccc"} <= set(summary["final"]) <= set(summary["initial"]["eval"]) | {"per_site"}
    clocks = [summary["initial"]["wall_seconds"], *(r["wall_seconds"] for r in summary["rounds"])]
    assert 0 < clocks[0] < clocks[-1] <= summary["wall_seconds"]  # when each round ended, one clock


@pytest.mark.parametrize("mode", ["fedavg_full", "local_only"])
def test_federated_baselines(cohort: Path, tmp_path: Path, mode: str) -> None:
    summary = run_in_process(_config(cohort, tmp_path, mode), {100 + i: node_context(i, 2) for i in range(2)})
    _check_shape(summary, mode)
    entry = summary["rounds"][0]
    if mode == "local_only":
        assert summary["shared_keys"] == [] and entry["bytes_up"] == entry["bytes_down"] == 0
    else:
        assert any(k.startswith("personality.") for k in summary["shared_keys"])
        assert all("prototype" not in k for k in summary["shared_keys"])
        assert entry["bytes_up"] > 0 and not entry["rejected"]


def test_centralized(cohort: Path, tmp_path: Path) -> None:
    summary = run_centralized(_config(cohort, tmp_path, "centralized"))
    _check_shape(summary, "centralized")
    # each site's own calibration offset (eval.calibration=offset, the default), as in federation
    assert all(np.isfinite(summary["final"]["per_site"][s]["calibration_offset"]) for s in ("site-01", "site-02"))
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "plots" / "eval.png").is_file()
