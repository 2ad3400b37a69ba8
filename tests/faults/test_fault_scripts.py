"""The deployed fault scripts of :mod:`tests.faults.scripts` over real processes.

One SuperLink and two SuperNodes (TLS, SuperNode auth, 127.0.0.1) serve the module; each
script's runs start on it with fresh site state (the simulated script is in
``test_simulated_faults.py``, so that the two run side by side on two test workers). Each
fault gets a verdict row (``tests/faults/table.py``); a test fails when a fault was not
handled or something written before a fault was lost.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.deployment.deploylib.tiny import tiny_cohort
from tests.faults.outcome import timed_reference, verdicts
from tests.faults.driver import DeployedFederation, run_script
from tests.faults.scripts import COORDINATOR, SITE_FAULTS, SITES, TOO_FEW
from tests.faults.verdicts import judge, losses

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


@pytest.mark.deployment
def test_coordinator_faults(deployment: Deployment) -> None:
    runs = deployment.root.parent / "runs"
    reference = DeployedFederation(deployment, COORDINATOR, runs / f"{COORDINATOR.name}-reference")
    reference.reset_sites()
    weights = timed_reference(reference)
    fed = DeployedFederation(deployment, COORDINATOR, runs / COORDINATOR.name)
    fed.reset_sites()
    record = run_script(fed)
    record.reference = weights
    verdicts(record)


@pytest.mark.deployment
def test_too_few_sites(deployment: Deployment) -> None:
    fed = DeployedFederation(deployment, TOO_FEW, deployment.root.parent / "runs" / TOO_FEW.name)
    fed.reset_sites()
    verdicts(run_script(fed))


@pytest.mark.deployment
def test_site_faults(deployment: Deployment) -> None:
    fed = DeployedFederation(deployment, SITE_FAULTS, deployment.root.parent / "runs" / SITE_FAULTS.name)
    fed.reset_sites()
    verdicts(run_script(fed))
