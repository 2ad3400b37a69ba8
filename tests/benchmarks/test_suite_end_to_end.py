"""The suite for real, so that it cannot rot: ``python -m benchmarks --quick --only startup``
(the cheapest real study: one fresh site process; 20 to 45 s on 2 shared cores), then the README
renderer on what it wrote, then a second run that finds it done."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import render_results

ROOT = Path(__file__).resolve().parents[2]


def suite(results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "startup", "--results",
                           str(results)], cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_a_quick_study_runs_renders_and_resumes(tmp_path: Path):
    results = tmp_path / "results"
    done = suite(results)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entry = json.loads((results / "suite-quick.json").read_text())["steps"]["startup/site_startup"]
    assert entry["status"] == "ok" and entry["output"] == "site_startup-quick.json"
    report = json.loads((results / "site_startup-quick.json").read_text())
    assert report["repeats"] == 1 and report["median"]["handler_s"] > 0

    readme = tmp_path / "README.md"
    readme.write_text(f"{render_results.BEGIN}\n{render_results.END}\n")
    assert render_results.main(["--readme", str(readme), "--results", str(results), "--mode", "quick"]) == 0
    text = readme.read_text()
    assert "`site_startup` (" in text and "| handler_s |" in text and "(no table" not in text

    again = suite(results)
    assert again.returncode == 0 and "skipped" in again.stdout
