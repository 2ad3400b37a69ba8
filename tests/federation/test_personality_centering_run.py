"""Sites centre a new personality branch once, before its first training, and never under DP-SGD
(the real ServerApp and ClientApp code over an in-process grid)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import client.handlers
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

SITES = 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("centring"), sites=SITES)


def _centred_runs(monkeypatch: pytest.MonkeyPatch, cohort: Path, root: Path, rounds: int = 2, **extra: Any) -> list[int]:
    calls: list[int] = []
    real = client.handlers.center_personality

    def spy(model: Any, batches: Any, *args: Any, **kwargs: Any) -> int:
        calls.append(real(model, batches, *args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(client.handlers, "center_personality", spy)
    cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
           "num-server-rounds": rounds, **extra}
    run_in_process(cfg, {100 + i: node_context(i, SITES) for i in range(SITES)})
    return calls


def test_each_site_centres_once_before_its_first_round(monkeypatch, cohort, tmp_path):
    calls = _centred_runs(monkeypatch, cohort, tmp_path, **{"train.center_personality": True})
    assert len(calls) == SITES and all(n > 0 for n in calls)


def test_switched_off_or_under_dp_sgd_no_site_centres(monkeypatch, cohort, tmp_path):
    off = {"train.center_personality": False}
    assert _centred_runs(monkeypatch, cohort, tmp_path / "off", rounds=1, **off) == []
    dp = {"dp.mode": "opacus", "dp.noise_multiplier": 1.0, "train.center_personality": True}
    assert _centred_runs(monkeypatch, cohort, tmp_path / "dp", rounds=1, **dp) == []
