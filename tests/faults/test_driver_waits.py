"""The driver's waits: a run that ended before a fault's moment fails the script at once,
with the run's log, instead of holding the test until :data:`tests.faults.driver.WAIT`."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults import driver
from tests.faults.scripts import SITES, Fault, Script, When
from tests.faults.watch import Watcher

pytestmark = pytest.mark.faults

SCRIPT = Script(name="ends-early", where="deployment", sites=SITES, config={},
                faults=(Fault("silence-site", "site-02", When("received", "train", 2)),))


class EndedRun:
    """A federation whose run is over (or not) and whose sites never log a message."""

    def __init__(self, tmp_path: Path, status: str) -> None:
        self.script, self.status = SCRIPT, status
        self.watcher = Watcher(lambda site: "", {s: tmp_path / s for s in SITES}, tmp_path / "run")
        self.run_dir = tmp_path / "run"
        self.silenced: list[str] = []

    def ended(self) -> str:
        return self.status

    def logs(self) -> str:
        return "ERROR : round 1 failed: min-sites=2 not reached"

    def silence_site(self, fault: Fault, since: float) -> str:
        self.silenced.append(fault.target)
        return "silenced"


def test_a_moment_after_the_run_ended_fails_at_once_with_the_log(tmp_path: Path) -> None:
    fed = EndedRun(tmp_path, "finished:failed")
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"ended \(finished:failed\) before the moment of "
                                             r"'silence site-02 during train of round 2'[\s\S]*min-sites=2"):
        driver.inject(fed, SCRIPT.faults[0])  # type: ignore[arg-type]
    assert time.monotonic() - start < 5 and not fed.silenced


def test_a_moment_seen_just_before_the_end_is_still_injected(tmp_path: Path) -> None:
    fed = EndedRun(tmp_path, "finished:failed")
    fed.watcher.logs = lambda site: "Receiving: train message" if site == "site-02" else ""
    fed.watcher.segment.checkpointed = 1  # round 1 was checkpointed: the message is round 2's
    injection = driver.inject(fed, SCRIPT.faults[0])  # type: ignore[arg-type]
    assert fed.silenced == ["site-02"] and injection.note == "silenced"
