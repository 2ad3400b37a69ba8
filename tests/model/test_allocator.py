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

FAULTS_PER_ALLOCATION = textwrap.dedent("""
    import resource, sys
    import torch
    from mpdrm.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    def touch():  # 64 MiB allocated, written, freed: a training step's large temporaries
        torch.ones(16 * 1024 * 1024)
    touch(); touch()  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        touch()
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
""")


def _faults(side: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ALLOCATION, side], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not allocator.is_glibc(), reason="keep_freed_memory tunes glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulting_in_again():
    applied, kept = _faults("keep")
    not_applied, default = _faults("default")
    assert applied and not not_applied
    pages = 64 * 1024 * 1024 // 4096
    assert default > 0.9 * pages  # glibc's default: every reallocation is fresh memory
    assert kept < 0.01 * pages


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
