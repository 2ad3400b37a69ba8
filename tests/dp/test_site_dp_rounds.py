"""Client-side DP (dp.mode=opacus) through the real ServerApp and ClientApp code over an
in-process Grid (no Ray): epsilon accumulates over rounds and across site restarts and
server resumes, the reply reports it, summary.json carries it, and a site stops at its
budget while the run ends cleanly."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant

from client.privacy import newest_ledger
from client.state import STATE_FILE
from mpdrm import tensorfile
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

pytestmark = pytest.mark.dp

SITES = ("site-01", "site-02")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("dp-sites"), sites=2)


def _config(cohort: Path, root: Path, rounds: int, **dp) -> dict:
    return {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
            "num-server-rounds": rounds, "dp.mode": "opacus", "dp.noise_multiplier": 1.0, **dp}


def _contexts() -> dict:
    """Fresh node contexts: what restarted site processes start with (no context.state)."""
    return {100 + i: node_context(i, 2) for i in range(2)}


def _independent_epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    acct = PRVAccountant()
    acct.history = [(noise, rate, steps)]
    return acct.get_epsilon(delta=delta)


def test_epsilon_accumulates_over_rounds_restarts_and_resume(cohort: Path, tmp_path: Path) -> None:
    first = run_in_process(_config(cohort, tmp_path, 2), _contexts())
    totals = first["dp"]
    assert set(totals) == set(SITES)
    rate, steps = totals["site-01"]["sample_rate"], totals["site-01"]["steps"]
    per_round = steps // 2
    assert per_round >= 1 and steps == 2 * per_round
    eps = [r["epsilon"]["site-01"] for r in first["rounds"]]
    assert 0 < eps[0] < eps[1]
    assert eps[1] == pytest.approx(_independent_epsilon(1.0, rate, steps, 1e-5), rel=1e-6)
    assert totals["site-01"] == {"noise_multiplier": 1.0, "sample_rate": rate, "steps": steps, "delta": 1e-5,
                                 "epsilon": pytest.approx(eps[1]), "unit": "patient", "patients": 2}
    assert rate == 1 / 2  # patient level: batch 4 // 4 clips per patient = 1 of the 2 training patients
    # every training reply reported the site's epsilon
    assert first["rounds"][1]["train"]["per_site"]["site-02"]["epsilon"] == pytest.approx(totals["site-02"]["epsilon"])
    saved = tensorfile.load(tmp_path / "state" / "site-01" / STATE_FILE)
    assert sum(n for _, _, n in saved["dp"]["accountant"]["history"]) == steps

    # a new run over the same sites, every site process restarted (empty context.state):
    # the ledger comes from state-dir and keeps growing
    again = run_in_process(_config(cohort, tmp_path / "later", 1, **{"state-root": str(tmp_path / "state")}), _contexts())
    assert again["dp"]["site-01"]["steps"] == 3 * per_round
    assert again["rounds"][0]["epsilon"]["site-01"] == pytest.approx(
        _independent_epsilon(1.0, rate, 3 * per_round, 1e-5), rel=1e-6)

    # a server starting over (like one resumed from an older checkpoint) sends the sites back to
    # older weights, never to an older epsilon: the newest ledger on disk wins
    restarted = run_in_process(_config(cohort, tmp_path, 2), _contexts())
    assert restarted["dp"]["site-01"]["steps"] == 5 * per_round


def test_newest_ledger_never_goes_back() -> None:
    old = {"round": 1, "dp": {"accountant": {"history": [[1.0, 0.5, 2]]}}}
    new = {"round": 2, "dp": {"accountant": {"history": [[1.0, 0.5, 2], [0.8, 0.5, 2]]}}}
    assert newest_ledger([new, old, None, {"round": 0, "dp": None}]) == new["dp"]
    assert newest_ledger([old, new]) == new["dp"]
    assert newest_ledger([{"round": 3}]) is None


def test_budget_stops_the_site_at_the_right_round_and_the_run_ends(cohort: Path, tmp_path: Path) -> None:
    # learn the mechanism's numbers from one unlimited round in a scratch state
    probe = run_in_process(_config(cohort, tmp_path / "probe", 1), _contexts())["dp"]["site-01"]
    rate, per_round = probe["sample_rate"], probe["steps"]
    budget = 0.5 * (_independent_epsilon(1.0, rate, 2 * per_round, 1e-5)
                    + _independent_epsilon(1.0, rate, 3 * per_round, 1e-5))  # between rounds 2 and 3
    summary = run_in_process(_config(cohort, tmp_path / "run", 5, **{"dp.epsilon_budget": budget}), _contexts())

    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    assert summary["stopped"]["round"] == 3 and "budget" in summary["stopped"]["reason"]
    assert summary["rounds"][1]["aggregated"] and not summary["rounds"][2]["aggregated"]
    declined = summary["rounds"][2]["rejected"]
    assert sorted(r["site_id"] for r in declined) == [0, 1]
    assert all(r["stage"] == "train" and r["reason"].startswith("declined by the site: budget exhausted")
               for r in declined)
    for site in SITES:
        assert summary["dp"][site]["steps"] == 2 * per_round
        assert summary["dp"][site]["epsilon"] <= budget
        assert summary["rounds"][2]["epsilon"][site] == summary["rounds"][1]["epsilon"][site]
    assert summary["final"] is not None and math.isfinite(summary["final"]["rmse"])
    assert (tmp_path / "run" / "run" / "summary.json").is_file()
