"""The real FedMPDRM app deployed: a TLS-authenticated SuperLink and two hospital sites.

One 2-round run of a tiny configuration (the repository itself is the Flower app,
launched with ``flwr run . <connection>``) serves the module. Each site's SuperNode
talks to the SuperLink through a recording TLS tap, so the exact bytes that left each
site can be searched for tensor names afterwards.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploylib.harness import Deployment
from deploylib.tiny import TINY_RUN, tiny_cohort
from mpdrm import tensorfile

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
SITES = ("site-01", "site-02")


@dataclass
class DeployedRun:
    """A finished deployed run and where to look."""

    dep: Deployment
    run_id: int
    run_dir: Path
    status: dict
    wall_seconds: float


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedRun]:
    """Coordinator + two sites (registered keys, TLS, taps) run 2 rounds to completion."""
    root = tmp_path_factory.mktemp("deployed")
    cohort = tiny_cohort(root, sites=2)
    dep = Deployment(root / "deploy", num_site_keys=2)
    try:
        dep.start_federation(cohort, root / "state", SITES, tap=True)
        run_dir = root / "run"
        start = time.monotonic()
        run_id = dep.run(REPO, {**TINY_RUN, "num-server-rounds": 2, "min-sites": 2,
                                "run-dir": str(run_dir)})
        status = dep.wait_completed(run_id, timeout=700)
        wall = time.monotonic() - start
        print(f"\n[deployment] 2-round deployed run (2 sites, TLS + auth): {wall:.1f} s wall")
        yield DeployedRun(dep, run_id, run_dir, status, wall)
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"


def test_two_authenticated_sites_complete_two_rounds(deployed: DeployedRun) -> None:
    summary = json.loads((deployed.run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for entry in summary["rounds"]:
        assert set(entry["train"]["per_site"]) == {"1", "2"}  # node config site-id
        assert entry["bytes_up"] > 0 and entry["bytes_down"] > 0
        assert set(entry["eval"]["per_site"]) == {"1", "2"} and "rmse" in entry["eval"]
    assert "rmse" in summary["final"] and summary["wall_seconds"] > 0
    assert summary["shared_keys"] and summary["local_keys"]
    assert not any(k.startswith("personality.") for k in summary["shared_keys"])
    assert all(k.startswith("personality.") for k in summary["local_keys"])
    # watched through Flower's own tools
    log = deployed.dep.run_log(deployed.run_id)
    assert "round 2/2" in log
    assert deployed.status["status"] == "finished:completed"


def test_sites_kept_their_state_on_disk(deployed: DeployedRun) -> None:
    for site in deployed.dep.sites.values():
        state = tensorfile.load(site.state_dir / "site_state.safetensors")
        assert state["round"] == 2
        assert state["local"] and all(k.startswith("personality.") for k in state["local"])


def test_no_personality_tensor_leaves_a_site(deployed: DeployedRun) -> None:
    summary = json.loads((deployed.run_dir / "summary.json").read_text())
    shared = [k.encode() for k in summary["shared_keys"]]
    for site in deployed.dep.sites.values():
        up, down = site.tap.uplink_bytes(), site.tap.downlink_bytes()
        # positive control: the shared tensors' names are visible in the captured traffic
        missing = [k for k in shared if k not in up]
        assert not missing, f"{site.name}: shared names not seen in uplink: {missing[:3]}"
        assert len(up) > 100_000  # real model weights went through the tap
        assert b"personality." not in up, f"{site.name} sent a personality tensor"
        # (the downlink carries the app bundle, whose source code mentions the prefix,
        # so only the shared weights are checked there)
        assert all(k in down for k in shared[:5])
        assert not site.tap.errors
