"""The recording tap sees the exact bytes a site sends, so a leaked tensor name is caught.

Positive control for the privacy test on the real app: with a toy app, site-02 is told
to leak a ``personality.w`` array; the tap on site-02's link finds it, the tap on
site-01's link does not, and both see the shared array's name.
"""
from __future__ import annotations

import json

import pytest

from deploylib.harness import Deployment
from deploylib.toyapp import write_toy_app

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]


def test_tap_catches_a_leaked_personality_tensor(deployment: Deployment) -> None:
    dep = deployment
    app = write_toy_app(dep.root / "toyapp")
    dep.start_superlink()
    for name in ("site-01", "site-02"):
        dep.register(name)
    honest = dep.start_supernode("site-01", dep.root / "d1", dep.root / "s1", tap=True)
    leaky = dep.start_supernode("site-02", dep.root / "d2", dep.root / "s2", tap=True,
                                node_config={"leak": True})
    dep.wait_online(2)
    run_id = dep.run(app, {"out-dir": str(dep.root / "out"), "num-server-rounds": 1})
    dep.wait_completed(run_id, timeout=200)
    summary = json.loads((dep.root / "out" / "summary.json").read_text())
    assert summary["final"] == [1.0] * 4

    up_honest, up_leaky = honest.tap.uplink_bytes(), leaky.tap.uplink_bytes()
    assert b"shared.w" in up_honest and b"shared.w" in up_leaky
    assert b"personality." not in up_honest
    assert b"personality.w" in up_leaky
    assert b"shared.w" in honest.tap.downlink_bytes()
    # the tap only relays: TLS to the SuperLink held and the site kept its private state
    assert not honest.tap.errors and not leaky.tap.errors
    assert (dep.root / "s1" / "private.npy").is_file()
