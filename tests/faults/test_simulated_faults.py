"""The simulated fault script of :mod:`tests.faults.scripts`: ``mpdrm-simulate`` (Flower's
Ray simulation) whose coordinator's disk fills up and which is killed, each time resumed.

The faulted run's folder is a small disk of its own (:class:`~tests.faults.small_disk.SmallDisk`:
a tmpfs in a private mount namespace; the sites' state stays on the real disk), so that
filling it makes the coordinator's checkpoint write fail with the kernel's ``ENOSPC``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.driver import SimulatedFederation, run_script
from tests.faults.outcome import timed_reference, verdicts
from tests.faults.scripts import SIMULATED_COORDINATOR, SITES, SMALL_DISK
from tests.faults.small_disk import SmallDisk
from tests.federation.sim_helpers import TINY_OVERRIDES, make_tiny_cohort

pytestmark = [pytest.mark.faults, pytest.mark.simulation, pytest.mark.timeout(2400)]


def test_simulated_coordinator_faults(tmp_path: Path) -> None:
    cohort = make_tiny_cohort(tmp_path, sites=len(SITES))
    disk = SmallDisk(tmp_path / "faulted", SMALL_DISK, keep={"site-state": tmp_path / "faulted-site-state"})
    disk.start()
    reference = SimulatedFederation(SIMULATED_COORDINATOR, cohort, tmp_path / "reference", TINY_OVERRIDES)
    faulted = SimulatedFederation(SIMULATED_COORDINATOR, cohort, tmp_path / "faulted", TINY_OVERRIDES, disk=disk)
    try:
        weights = timed_reference(reference)
        record = run_script(faulted)
        record.reference = weights
        verdicts(record)  # before the disk goes: the faulted run's files are on it
    finally:
        left = [pid for fed in (reference, faulted) for pid in fed.close()]
    assert not left, f"processes of the simulation left running: {left}"
