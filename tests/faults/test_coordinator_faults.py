"""The coordinator fault script over real processes (:data:`tests.faults.scripts.COORDINATOR`):
the SuperLink killed mid-round, restarted and the run resumed; then its newest checkpoint
truncated and the run resumed again. The final shared weights must equal an uninterrupted
reference run's, bit for bit; each fault gets a verdict row (``tests/faults/table.py``)."""
from __future__ import annotations

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.faults.deployed import federation
from tests.faults.driver import run_script
from tests.faults.outcome import timed_reference, verdicts
from tests.faults.scripts import COORDINATOR

pytestmark = [pytest.mark.faults, pytest.mark.deployment, pytest.mark.timeout(2400)]


def test_coordinator_faults(deployment: Deployment) -> None:
    weights = timed_reference(federation(deployment, COORDINATOR, "-reference"))
    record = run_script(federation(deployment, COORDINATOR))
    record.reference = weights
    verdicts(record)
