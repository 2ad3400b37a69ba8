"""Our code is what runs: ``mpdrm-simulate`` started from a folder that holds empty packages
named like ours (``mpdrm``, ``strategies``, ``client``, ``server``, ``simulations``) still
runs this repository's code, in the simulation process and in the sites' Ray workers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from simulations.processes import TOKEN_ENV, processes_with_token
from tests.federation.sim_helpers import TINY_OVERRIDES, make_tiny_cohort

pytestmark = [pytest.mark.simulation, pytest.mark.faults, pytest.mark.timeout(420)]

SHADOWS = ("mpdrm", "strategies", "client", "server", "simulations")


def test_packages_in_the_current_folder_do_not_shadow_ours(tmp_path: Path) -> None:
    cohort = make_tiny_cohort(tmp_path / "data", sites=2)
    here = tmp_path / "user-folder"
    for name in SHADOWS:
        (here / name).mkdir(parents=True)
        (here / name / "__init__.py").write_text("")
    token, run_dir = uuid.uuid4().hex, tmp_path / "run"
    command = [str(Path(sys.executable).with_name("mpdrm-simulate")), f"cohort={cohort}", f"run_dir={run_dir}",
               "rounds=1", "resources.client_cpus=1", *TINY_OVERRIDES]
    done = subprocess.run(command, cwd=here, env={**os.environ, TOKEN_ENV: token, "FLWR_TELEMETRY_ENABLED": "0"},
                          capture_output=True, text=True, timeout=400)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert "has no attribute" not in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1]
    assert set(summary["rounds"][0]["eval"]["per_site"]) == {"site-01", "site-02"}
    assert processes_with_token(token) == []
