"""Sites crash and come back: three real SuperNodes running the real FedMPDRM app.

One deployment (TLS + SuperNode auth) with three sites serves the module; one crash
(the SuperLink notices it after two missed heartbeats: the sites run ``mpdrm-supernode
--heartbeat-interval 10``, so about 20 s instead of Flower's 60) serves every check:

0. the SuperLink records the sites' announced heartbeat interval (10 s, not Flower's 30);
1. a run with ``min-sites=3`` (2 rounds): site-03 is killed (SIGKILL of its whole process
   tree) while it trains round 2; the SuperLink answers for the dead node, and the run
   must fail (``finished:failed``) with a message naming the minimum, the sites that
   replied and the missing one, instead of waiting for it forever;
2. the same run resumed with ``min-sites=2`` (the minimum allows it): round 2 is
   aggregated from the two others and the run completes;
3. site-03 restarts with the same ``state-dir`` and the run is resumed for a third round
   with all three sites: site-03 must continue from the personality weights it saved.

Evaluation is switched off (``fraction-evaluate=0``) to keep the runs short: only the
training messages matter here.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from deploylib import procs
from deploylib.harness import Deployment
from deploylib.tiny import TINY_RUN, tiny_cohort
from mpdrm import tensorfile

pytestmark = [pytest.mark.deployment]

REPO = Path(__file__).resolve().parents[2]
SITES = ("site-01", "site-02", "site-03")
STATE_FILE = "site_state.safetensors"  # client/state.py: STATE_DIR/site_state.safetensors
BASE_CONFIG = {**TINY_RUN, "fraction-evaluate": 0.0}
HEARTBEAT = 10.0


def _state(state_dir: Path) -> dict | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        return tensorfile.load(path)
    except Exception:  # noqa: BLE001 (being replaced right now)
        return None


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _trained_sites(summary: dict, server_round: int) -> set[str]:
    """Sites whose training reply was aggregated in that round (per_site keys = site ids)."""
    entry = next(r for r in summary["rounds"] if r["round"] == server_round)
    ids = {str(i): name for i, name in enumerate(SITES, start=1)}
    return {ids.get(k, k) for k in entry["train"].get("per_site", {})}


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """SuperLink + three registered, online SuperNodes on a tiny synthetic cohort."""
    root = tmp_path_factory.mktemp("failure")
    cohort = tiny_cohort(root, sites=3)
    dep = Deployment(root / "deploy", num_site_keys=3, heartbeat_interval=HEARTBEAT)
    try:
        dep.start_federation(cohort, root / "state", SITES)
        yield dep
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"


def _kill_while_training(dep: Deployment, label: str, after_round: int, timeout: float) -> float:
    """SIGKILL ``label`` as soon as it starts the training after ``after_round``."""
    state_dir = dep.sites[label].state_dir

    def saved() -> bool:
        st = _state(state_dir)
        return st is not None and int(st["round"]) >= after_round

    if after_round > 0:
        procs.wait_for(saved, timeout, f"{label} to save round {after_round}", interval=0.5,
                       on_fail=dep.all_logs)
    old = dep.clientapp_pids(label) if after_round > 0 else set()
    procs.wait_for(lambda: dep.clientapp_pids(label) - old, timeout,
                   f"{label} to start its next clientapp", interval=0.2, on_fail=dep.all_logs)
    dep.kill_site(label)
    return time.monotonic()


def _mark_personality(state_dir: Path, saved: dict) -> tuple[dict, dict, torch.Tensor]:
    """Shift the saved personality weights so that "continued from them" is checkable."""
    local = saved["local"]
    assert local and all(k.startswith("personality.") for k in local)
    gen = torch.Generator().manual_seed(1234)
    marker = {k: (v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
                  if v.is_floating_point() else v.clone()) for k, v in local.items()}
    tensorfile.save(state_dir / STATE_FILE, {**saved, "local": marker})
    offset = torch.sqrt(sum(((marker[k] - local[k]) ** 2).sum()
                            for k in local if local[k].is_floating_point()))
    return local, marker, offset


#: Flower's words when a reply's upload did not reach the SuperLink (its object-push failed:
#: seen once on a loaded 2-core machine, HTTP 500 on push-object); not this test's fault.
LOST_UPLOAD = "Reply message objects are unavailable"


def _resume_until_completed(dep: Deployment, config: dict, attempts: int = 2) -> None:
    """Run ``config`` (a resume) and wait for it to complete. A run that failed only because
    the transport lost a healthy site's reply (:data:`LOST_UPLOAD`: the round fails by
    min-sites, as the operator would see it) is resumed once more, as the operator would;
    any other ending fails the test."""
    for attempt in range(1, attempts + 1):
        run_id = dep.run(REPO, config)
        status = dep.wait_run(run_id, timeout=400)
        if status.get("status") == "finished:completed":
            return
        details = str(status.get("status-details"))
        if LOST_UPLOAD not in details or attempt == attempts:
            raise AssertionError(f"run {run_id} ended {status.get('status')} ({details})\n"
                                 f"{dep.run_log(run_id)}\n{dep.all_logs()}")
        print(f"run {run_id}: a reply's upload was lost by the transport ({details[:300]}); "
              "resuming once more", flush=True)


def _failure_details(dep: Deployment, run_id: int) -> tuple[dict, str]:
    """Wait (bounded) for a run that must end; its status and ServerApp log."""
    try:
        status = dep.wait_run(run_id, timeout=240)
    except TimeoutError:
        log = dep.run_log(run_id)
        dep.cli("flwr", "stop", str(run_id), "mpdrm-test", check=False)
        pytest.fail("with min-sites=3 and one of three sites dead the run neither failed nor "
                    f"finished within 240 s; ServerApp log tail:\n{log[-3000:]}")
    return status, f"{status.get('status-details')}\n{dep.run_log(run_id)}"


@pytest.mark.timeout(1800)
def test_killed_site_fails_or_completes_by_min_sites_then_restarted_site_continues(
    three_sites: Deployment,
) -> None:
    dep = three_sites
    assert sorted(dep.heartbeat_intervals().values()) == [HEARTBEAT] * 3, dep.heartbeat_intervals()
    run_dir = dep.root / "run"
    victim = "site-03"
    run_id = dep.run(REPO, {**BASE_CONFIG, "num-server-rounds": 2, "min-sites": 3,
                            "run-dir": str(run_dir)})
    _kill_while_training(dep, victim, after_round=1, timeout=300)
    saved = _state(dep.sites[victim].state_dir)
    assert saved is not None and saved["round"] == 1, "site-03 should have saved round 1 only"

    # --- min-sites=3 with one of three sites dead mid-round: the run fails, saying why
    status, details = _failure_details(dep, run_id)
    assert status["status"] == "finished:failed", details
    assert "min-sites=3" in details and "2 valid training replies (site 1, site 2)" in details, details
    assert "missing: site 3 (node " in details, details  # named from round 1's reply
    assert "site ? " not in details, details
    summary = _summary(run_dir)
    assert summary["stopped"]["failed"] and summary["stopped"]["round"] == 2
    assert "min-sites=3" in summary["stopped"]["reason"]
    assert _trained_sites(summary, 1) == set(SITES)

    # --- the operator accepts two sites: the same run resumes and completes without site-03
    run_id = dep.run(REPO, {**BASE_CONFIG, "num-server-rounds": 2, "min-sites": 2,
                            "run-dir": str(run_dir), "resume": True})
    dep.wait_completed(run_id, timeout=400)
    summary = _summary(run_dir)
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and "stopped" not in summary
    assert _trained_sites(summary, 2) == {"site-01", "site-02"}
    assert _state(dep.sites[victim].state_dir)["round"] == 1

    # --- restart site-03 with the same state-dir; resume for one more round with all three
    state_dir = dep.sites[victim].state_dir
    local, marker, offset = _mark_personality(state_dir, saved)
    dep.start_supernode(victim, dep.sites[victim].data_path, state_dir,
                        node_config={"site-id": SITES.index(victim) + 1})
    dep.wait_online(3, timeout=120)
    _resume_until_completed(dep, {**BASE_CONFIG, "num-server-rounds": 3, "min-sites": 3,
                                  "run-dir": str(run_dir), "resume": True})
    summary = _summary(run_dir)
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    assert _trained_sites(summary, 3) == set(SITES)

    after = _state(state_dir)
    assert after["round"] == 3
    floats = [k for k in local if local[k].is_floating_point()]
    from_marker = torch.sqrt(sum(((after["local"][k] - marker[k]) ** 2).sum() for k in floats))
    from_saved = torch.sqrt(sum(((after["local"][k] - local[k]) ** 2).sum() for k in floats))
    # trained from the marked weights: one round moves them far less than the marker offset
    assert from_marker < 0.3 * offset, (float(from_marker), float(offset))
    assert from_saved > 0.7 * offset, (float(from_saved), float(offset))
