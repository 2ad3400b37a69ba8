"""Shared helpers for the model tests: small batches and a tiny learnable dataset."""
import pytest
import torch
from torch.utils.data import Dataset

import mpdrm


def _make_batch(cfg: "mpdrm.MPDRMConfig", b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(b, generator=g) if cfg.task == "regression"
              else torch.randint(0, cfg.num_classes, (b,), generator=g))
    return {
        "clips": torch.randn(b, cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size, generator=g),
        "target": target,
        "subject": torch.arange(b) % max(cfg.num_subjects, 1),
        "visit": (torch.arange(b) // 2) % 2,
        "video": torch.arange(b) // 2,
    }


class BrightnessDataset(Dataset):
    """Clips whose brightness encodes the target (plus noise): learnable in a few steps."""

    def __init__(self, n: int = 48, frames: int = 8, size: int = 32, subjects: int = 4, seed: int = 0,
                 task: str = "regression"):
        g = torch.Generator().manual_seed(seed)
        self.target = torch.rand(n, generator=g)
        self.subject = torch.arange(n) % subjects
        self.visit = (torch.arange(n) // subjects) % 2
        self.video = torch.arange(n) // 2
        noise = torch.randn(n, 1, frames, size, size, generator=g) * 0.2
        self.clips = noise + 2.0 * (self.target.view(-1, 1, 1, 1, 1) - 0.5)
        self.task = task

    def __len__(self):
        return len(self.target)

    def __getitem__(self, i):
        target = self.target[i] if self.task == "regression" else (self.target[i] > 0.5).long()
        return {"clips": self.clips[i], "target": target, "subject": self.subject[i],
                "visit": self.visit[i], "video": self.video[i]}


@pytest.fixture
def make_batch():
    """make_batch(cfg, b=4, seed=0) -> a batch dict shaped for cfg."""
    return _make_batch


@pytest.fixture
def brightness_dataset():
    """The BrightnessDataset class (n, frames, size, subjects, seed, task)."""
    return BrightnessDataset


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run the model tests on one intra-op thread. On a shared 2-core machine with other busy
    processes, torch's 2-thread OpenMP kernels were measured 5-25x slower than 1 thread (barrier
    waits under oversubscription); one thread keeps these tests fast and predictable."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
