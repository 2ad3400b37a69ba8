"""The scripted fault sequences of :mod:`tests.faults.scripts` over real processes.

Deployment: one SuperLink and two SuperNodes (TLS, SuperNode auth, 127.0.0.1) serve the
module; each script's runs start on it with fresh site state. Simulation: ``mpdrm-simulate``.
Each fault gets a verdict row (``tests/faults/table.py``); a test fails when a fault was
not handled or something written before a fault was lost.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.deployment.deploylib.tiny import tiny_cohort
from tests.faults import table
from tests.faults.driver import DeployedFederation, Record, SimulatedFederation, run_reference, run_script
from tests.faults.scripts import COORDINATOR, SIMULATED_COORDINATOR, SITE_FAULTS, SITES, Script
from tests.faults.verdicts import judge, losses
from tests.federation.sim_helpers import TINY_OVERRIDES, make_tiny_cohort

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """SuperLink + the two sites of the scripts, online, on a tiny prepared cohort."""
    root = tmp_path_factory.mktemp("faults")
    dep = Deployment(root / "deploy", num_site_keys=len(SITES))
    try:
        dep.start_federation(tiny_cohort(root, sites=len(SITES)), root / "state", SITES)
        yield dep
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"


def _reference_row(script: Script, seconds: float) -> None:
    """The uninterrupted run's row."""
    table.ROWS.append(table.Row(script.name, "none (the uninterrupted reference run)", "run completed", True,
                                None, f"{seconds:.0f} s"))


def _verdicts(record: Record) -> None:
    """Add the script's rows to the table; fail on an unhandled fault or a loss."""
    rows = judge(record)
    table.ROWS.extend(rows)
    table.WALLS[record.script.name] = record.wall
    table.TIMELINES[record.script.name] = [[round(e.at - record.started, 1), e.who, e.kind, e.stage, e.round]
                                           for e in record.watcher.events]
    lost = losses(record)
    text = table.markdown(rows, {record.script.name: record.wall})
    assert rows and all(r.ok for r in rows) and not lost, \
        f"{text}\nlost: {lost}\n{[r.detail for r in rows]}\n{record.logs[-6000:]}"


def _timed_reference(fed: DeployedFederation | SimulatedFederation) -> dict[str, np.ndarray]:
    """The reference run's final shared weights (its row goes into the table)."""
    start = time.monotonic()
    weights = run_reference(fed)
    _reference_row(fed.script, time.monotonic() - start)
    return weights


@pytest.mark.deployment
def test_coordinator_faults(deployment: Deployment) -> None:
    runs = deployment.root.parent / "runs"
    reference = DeployedFederation(deployment, COORDINATOR, runs / f"{COORDINATOR.name}-reference")
    reference.reset_sites()
    weights = _timed_reference(reference)
    fed = DeployedFederation(deployment, COORDINATOR, runs / COORDINATOR.name)
    fed.reset_sites()
    record = run_script(fed)
    record.reference = weights
    _verdicts(record)


@pytest.mark.deployment
def test_site_faults(deployment: Deployment) -> None:
    fed = DeployedFederation(deployment, SITE_FAULTS, deployment.root.parent / "runs" / SITE_FAULTS.name)
    fed.reset_sites()
    _verdicts(run_script(fed))


@pytest.mark.simulation
def test_simulated_coordinator_faults(tmp_path: Path) -> None:
    cohort = make_tiny_cohort(tmp_path, sites=len(SITES))
    feds = [SimulatedFederation(SIMULATED_COORDINATOR, cohort, tmp_path / name, TINY_OVERRIDES)
            for name in ("reference", "faulted")]
    try:
        weights = _timed_reference(feds[0])
        record = run_script(feds[1])
    finally:
        left = [pid for fed in feds for pid in fed.close()]
    record.reference = weights
    _verdicts(record)
    assert not left, f"processes of the simulation left running: {left}"
