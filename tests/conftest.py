"""Suite-wide settings: offline Flower, quiet telemetry, deterministic torch threads, and the
units of work of two pytest-xdist workers (``./dev test`` adds ``-n 2 --dist loadfile``)."""
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
    session's shared temporary folder; without xdist there is no one to wait for."""
    if request.node.get_closest_marker("simulation") is None or not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    from mpdrm.data.cohorts import file_lock

    with file_lock(tmp_path_factory.getbasetemp().parent / "ray.lock"):  # basetemp is <session>/popen-gwN
        yield


def pytest_xdist_make_scheduler(config, log):
    """Units of work for ``-n 2 --dist loadfile``: each test module is one unit (a module
    fixture, such as a deployment, is set up once, by one worker), except that the inference
    modules are one unit (they share one session-scoped in-process run, ``tiny_run``).
    Units go out in collection order (``--no-loadscope-reorder``), so the long deployment
    modules start first."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/inference/" if module.startswith("tests/inference/") else module

    return ModuleUnits(config, log)
