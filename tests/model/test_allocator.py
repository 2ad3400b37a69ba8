"""glibc keeps freed memory once asked (mpdrm.allocator), and train_local asks unless told not to."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from torch.utils.data import DataLoader

import mpdrm
from mpdrm import allocator, training
from mpdrm.training import TrainConfig, train_local

STEP_FAULTS = textwrap.dedent("""
    import resource, sys
    import torch
    from mpdrm.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    def step():  # a training step's large temporaries: 64 MiB and 40 MiB, written and freed
        a = torch.ones(16 * 1024 * 1024)
        b = torch.ones(10 * 1024 * 1024)
        del a, b
    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    for _ in range(10):  # warm up: glibc's bins settle
        step()
    before, rss = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, rss_mib()
    for _ in range(4):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
    for _ in range(20):
        step()
    print(applied, faults, rss_mib() - rss)
""")


def _step(side: str) -> tuple[bool, float, float]:
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, side], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", float(out[1]), float(out[2])


@pytest.mark.skipif(not allocator.is_glibc(), reason="keep_freed_memory tunes glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulting_in_again():
    applied, kept_faults, kept_growth = _step("keep")
    not_applied, default_faults, _ = _step("default")
    assert applied and not not_applied
    pages = (64 + 40) * 2**20 // 4096
    assert default_faults > 0.9 * pages  # glibc's default: every step's blocks are fresh memory
    assert kept_faults < 0.01 * pages
    assert kept_growth < 8  # MiB over 20 more steps: freed memory is reused, not piled up


def test_nothing_changes_off_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "is_glibc", lambda: False)
    assert allocator.keep_freed_memory() is False
    assert allocator._applied is False


@pytest.mark.parametrize("keep", [True, False])
def test_train_local_keeps_freed_memory_unless_told_not_to(keep, monkeypatch, brightness_dataset):
    calls = []
    monkeypatch.setattr(training, "keep_freed_memory", lambda: calls.append(1) or True)
    model = mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)
    loader = DataLoader(brightness_dataset(n=8), batch_size=8)
    train_local(model, loader, TrainConfig(epochs=1, max_steps=1, device="cpu", keep_freed_memory=keep))
    assert len(calls) == (1 if keep else 0)
