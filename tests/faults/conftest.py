"""The fault-injection harness's table: written to ``benchmarks/results/faults.{json,md}``
at the end of a session that ran fault scripts, and printed."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.faults import table
from tests.faults.deployed import two_site_deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A deployment of its own for each module of a deployed fault script (see ``deployed.py``)."""
    yield from two_site_deployment(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the table of the fault scripts this process ran (none ran: nothing written)."""
    if table.ROWS:
        table.write(table.ROWS, table.WALLS)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the table after the test summary."""
    if table.ROWS:
        terminalreporter.write_sep("=", "fault-injection harness")
        terminalreporter.write_line(table.markdown(table.ROWS, table.WALLS))
        terminalreporter.write_line(f"written to {table.RESULTS}/faults.json and faults.md")
