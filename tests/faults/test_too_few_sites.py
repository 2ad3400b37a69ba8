"""The too-few-sites script over real processes (:data:`tests.faults.scripts.TOO_FEW`): with
``min-sites=2`` of 2 and one site silent in round 2 the run must fail by ``round-timeout``,
naming the minimum and the missing site, with round 1 kept."""
from __future__ import annotations

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.faults.deployed import federation
from tests.faults.driver import run_script
from tests.faults.outcome import verdicts
from tests.faults.scripts import TOO_FEW

pytestmark = [pytest.mark.faults, pytest.mark.deployment, pytest.mark.timeout(1500)]


def test_too_few_sites(deployment: Deployment) -> None:
    verdicts(run_script(federation(deployment, TOO_FEW)))
