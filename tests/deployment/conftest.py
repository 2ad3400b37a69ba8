"""Deployment tests: make ``deploylib`` importable and provide the deployment fixture."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploylib.harness import Deployment  # noqa: E402


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment rooted in tmp_path; every process it starts is stopped afterwards."""
    dep = Deployment(tmp_path / "deploy")
    try:
        yield dep
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"
