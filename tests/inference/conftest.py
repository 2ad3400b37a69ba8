"""Fixtures of the inference tests: one in-process federated run on a tiny cohort (the real
ServerApp and ClientApp code), and small videos and model directories for the CLI."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

SITES = 2
ROUNDS = 2


@dataclasses.dataclass
class Run:
    cohort: Path
    root: Path
    cfg: dict[str, Any]
    summary: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def state_dir(self, site: str) -> Path:
        return self.root / "state" / site

    def site_dir(self, site: str) -> Path:
        return self.cohort / site


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("inference-run")
    cohort = make_tiny_cohort(root, sites=SITES)
    cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
           "num-server-rounds": ROUNDS}
    summary = run_in_process(cfg, {100 + i: node_context(i, SITES) for i in range(SITES)})
    return Run(cohort, root, cfg, summary)
