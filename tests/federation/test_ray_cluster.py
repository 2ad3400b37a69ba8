"""``resources.ray_address``: mpdrm-simulate joins a Ray cluster that is already running
(here a head started on 127.0.0.1 first, as a user would on a bigger machine or cluster)
instead of starting Ray itself; the run completes and the cluster records it as a job."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.federation.sim_helpers import TINY_OVERRIDES, make_tiny_cohort

pytestmark = [pytest.mark.simulation, pytest.mark.timeout(600)]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jobs(address: str, env: dict[str, str]) -> list[dict]:
    """The cluster's job table (drivers that connected), read by a fresh driver."""
    code = ("import json, ray\n"
            f"ray.init(address={address!r}, include_dashboard=False, logging_level='ERROR')\n"
            "print(json.dumps([{'dead': j['IsDead'], 'id': j['JobID']} for j in ray._private.state.jobs()]))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{_free_port()}"
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
             "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    done = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    try:
        yield address, env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_simulate_joins_a_running_ray_cluster(ray_head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_head
    before = _jobs(address, env)
    cohort = make_tiny_cohort(tmp_path, sites=2)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "simulations.simulate", f"cohort={cohort}", f"run_dir={run_dir}", "rounds=1",
               "resources.client_cpus=1", f"resources.ray_address={address}", *TINY_OVERRIDES]
    done = subprocess.run(command, env={**env, "FLWR_TELEMETRY_ENABLED": "0"}, capture_output=True, text=True,
                          timeout=500, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1] and set(summary["final"]["per_site"]) == {"site-01", "site-02"}
    after = _jobs(address, env)
    new = [j for j in after if j["id"] not in {b["id"] for b in before}]
    assert len(new) == 2, after  # the simulation's driver, then this check's own driver


def test_ray_address_and_num_cpus_are_exclusive() -> None:
    from simulations.engine import backend_config

    assert backend_config({"ray_address": "10.0.0.5:6379"})["init_args"]["address"] == "10.0.0.5:6379"
    assert "address" not in backend_config({"num_cpus": 2})["init_args"]
    with pytest.raises(ValueError, match="leave resources.num_cpus unset"):
        backend_config({"ray_address": "auto", "num_cpus": 2})
