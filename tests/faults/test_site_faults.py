"""The site fault script over real processes (:data:`tests.faults.scripts.SITE_FAULTS`): a
straggler, a silenced site, a killed and restarted site, a truncated site state and a site
killed in the last round, in one deployed run with ``min-sites=1``. A test fails when a
fault was not handled or something written before a fault was lost."""
from __future__ import annotations

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.faults.deployed import federation
from tests.faults.driver import run_script
from tests.faults.outcome import verdicts
from tests.faults.scripts import SITE_FAULTS

pytestmark = [pytest.mark.faults, pytest.mark.deployment, pytest.mark.timeout(2400)]


def test_site_faults(deployment: Deployment) -> None:
    verdicts(run_script(federation(deployment, SITE_FAULTS)))
