"""The fault-injection harness's table: written to ``benchmarks/results/faults.{json,md}``
at the end of a session that ran fault scripts, and printed."""
from __future__ import annotations

import pytest

from tests.faults import table


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
