"""``resources.ray_address``: mpdrm-simulate joins a Ray cluster that is already running
(here a head started on 127.0.0.1 first, as a user would on a bigger machine or cluster)
instead of starting Ray itself; the run completes and the cluster records it as a job."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
        _stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _processes() -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, command line)}`` of this machine's processes (Linux ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (parent, cmdline)
    return table


def _stop_head(temp: str) -> None:
    """Kill this test's Ray head only: the processes naming its temp folder and all their
    descendants (``ray stop`` would stop every Ray instance on the machine, other runs' too)."""
    table = _processes()
    spared, pid = set(), os.getpid()  # this process and its ancestors
    while pid in table and pid not in spared:
        spared.add(pid)
        pid = table[pid][0]
    doomed = {pid for pid, (_, cmdline) in table.items() if temp in cmdline} - spared
    grew = True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in doomed} - doomed - spared
        doomed |= children
        grew = bool(children)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in doomed):
        time.sleep(0.2)
