"""The deployment the deployed fault scripts run on, one per test module: a SuperLink and
the two sites of :data:`tests.faults.scripts.SITES` (TLS, SuperNode auth, 127.0.0.1) on a
tiny prepared cohort. Each script is a module of its own, so that the scripts, whose time
is mostly waiting (heartbeats, ``round-grace``, ``round-timeout``), run on different test
workers side by side."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.deploylib.harness import Deployment
from tests.deployment.deploylib.tiny import tiny_cohort
from tests.faults.driver import DeployedFederation
from tests.faults.scripts import HEARTBEAT, SITES, Script


def two_site_deployment(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Deployment]:
    """Start the deployment; stop it afterwards and fail if a process was left running."""
    root = tmp_path_factory.mktemp(name)
    dep = Deployment(root / "deploy", num_site_keys=len(SITES), heartbeat_interval=HEARTBEAT)
    try:
        dep.start_federation(tiny_cohort(root, sites=len(SITES)), root / "state", SITES)
        yield dep
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"


def federation(dep: Deployment, script: Script, suffix: str = "") -> DeployedFederation:
    """A run of ``script`` on ``dep``, its folder under the module's root, sites reset."""
    fed = DeployedFederation(dep, script, dep.root.parent / "runs" / f"{script.name}{suffix}")
    fed.reset_sites()
    return fed
