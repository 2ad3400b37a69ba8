"""Suite-wide settings: offline Flower, quiet telemetry, deterministic torch threads, one Ray
instance at a time, and the units of work of the pytest-xdist workers (``./dev test`` adds
``-n 3 --dist loadfile``)."""
import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The whole session runs torch on one intra-op thread, session fixtures included (a
    site's model directory written inside ``tests/inference``'s session run is compared
    byte for byte with an export computed later in a test: both on the same thread count).
    On this 2-core machine, with a Ray simulation, a deployment's processes or the other
    xdist worker beside it, torch's 2-thread kernels wait on each other: an in-process
    2-round federated run took 45 s on 2 threads, 16 s on 1
    (tests/federation/test_server_federation.py, same machine and load, minutes apart)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_ray_at_a_time(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Tests that start Ray (marker ``simulation``) never overlap across xdist workers: Ray
    instances on one machine share ports, temp folders and ``ray stop``. A file lock in the
    session's shared temporary folder; without xdist there is no one to wait for. (Two local
    instances at once do work independently, but on 2 cores the suite took 1012 s with two
    at a time against 884 s with one: they only compete for the CPU.)"""
    if request.node.get_closest_marker("simulation") is None or not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    from mpdrm.data.cohorts import file_lock

    with file_lock(tmp_path_factory.getbasetemp().parent / "ray.lock"):  # basetemp is <session>/popen-gwN
        yield


#: The longest units of work (module: wall seconds in one 3-worker run on 2 cores), handed out
#: first and longest first, so that none of them starts when the rest of the suite is done;
#: the other units follow as pytest-xdist orders them (most tests first). Mostly waiting
#: (missed heartbeats, ``round-grace``, ``round-timeout``) or queued on the Ray lock.
LONG_UNITS: dict[str, float] = {
    "tests/faults/test_coordinator_faults.py": 400,
    "tests/deployment/test_site_failure.py": 340,
    "tests/faults/test_simulated_faults.py": 320,
    "tests/faults/test_site_faults.py": 260,
    "tests/deployment/test_deployed_run.py": 205,
    "tests/federation/test_flwr_run.py": 175,
    "tests/faults/test_too_few_sites.py": 140,
    "tests/dp/test_dp_simulation.py": 130,
    "tests/federation/test_simulation_e2e.py": 60,
}


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its module; the inference modules are one unit (they
    share one session-scoped in-process run, ``tiny_run``)."""
    module = nodeid.split("::", 1)[0]
    return "tests/inference/" if module.startswith("tests/inference/") else module


def long_units_first(nodeids: list[str]) -> list[str]:
    """``nodeids`` in the order their units go out: the units of :data:`LONG_UNITS`, longest
    first, then the others by number of tests (as pytest-xdist's ``loadscope`` reorder), each
    unit's tests kept in collection order."""
    longest = sorted(LONG_UNITS, key=lambda u: -LONG_UNITS[u])
    size: dict[str, int] = {}
    for nodeid in nodeids:
        size[unit_of(nodeid)] = size.get(unit_of(nodeid), 0) + 1

    def key(nodeid: str) -> tuple[int, int]:
        unit = unit_of(nodeid)
        return (longest.index(unit), 0) if unit in LONG_UNITS else (len(longest), -size[unit])
    return sorted(nodeids, key=key)


def pytest_xdist_make_scheduler(config, log):
    """Units of work for ``--dist loadfile`` (:func:`unit_of`), handed out in the order of
    :func:`long_units_first`."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                for node, collection in self.registered_collections.items():
                    self.registered_collections[node] = long_units_first(list(collection))
                self.config.option.loadscopereorder = False  # keep that order
            super().schedule()

    return ModuleUnits(config, log)
