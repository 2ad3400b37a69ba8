"""The prepared GPU check (benchmarks/gpu_check.py) skips cleanly without CUDA and its checks
run end to end on the CPU, so it works the day a site lends us a GPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the skip path does not apply")
def test_without_cuda_the_gpu_check_says_so_and_succeeds(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device here" in done.stdout and "skipped" in done.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_the_gpu_checks_run_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--sizes", "tiny", "--steps", "1",
                           "--image-size", "32", "--frames", "8", "--no-simulation", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["train"]) == {"tiny/fp32", "tiny/bf16"} and set(report["dp"]) == {"patient", "clip"}
    assert report["failures"] == [] and all(v["finite"] and v["clips_per_second"] > 0
                                            for v in [*report["train"].values(), *report["dp"].values()])
