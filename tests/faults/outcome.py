"""What a fault-script test does with a finished script: table rows, then pass or fail."""
from __future__ import annotations

import time

import numpy as np

from tests.faults import table
from tests.faults.driver import Federation, Record, run_reference
from tests.faults.scripts import Script
from tests.faults.verdicts import judge, losses


def reference_row(script: Script, seconds: float) -> None:
    """The uninterrupted run's row."""
    table.ROWS.append(table.Row(script.name, "none (the uninterrupted reference run)", "run completed", True,
                                None, f"{seconds:.0f} s"))


def verdicts(record: Record) -> None:
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


def timed_reference(fed: Federation) -> dict[str, np.ndarray]:
    """The reference run's final shared weights (its row goes into the table)."""
    start = time.monotonic()
    weights = run_reference(fed)
    reference_row(fed.script, time.monotonic() - start)
    return weights
