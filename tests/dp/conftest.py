"""Fixtures for the DP tests: a small real MPDRM, a tiny site dataset, a per-example loss,
and a minimal DP training round (the client's loop lives elsewhere)."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mpdrm.losses import MPDRMLoss
from mpdrm.privacy import PrivateTraining, private_step

N_EXAMPLES = 12
BATCH = 4
SUBJECTS = 3
FRAMES = 8
SIZE = 32


class ClipDataset(Dataset):
    """Random clips shaped like the site's batch dicts."""

    def __init__(self, n: int = N_EXAMPLES, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.clips = torch.randn(n, 1, FRAMES, SIZE, SIZE, generator=g)
        self.target = torch.rand(n, generator=g)
        self.subject = torch.arange(n) % SUBJECTS

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"clips": self.clips[i], "target": self.target[i], "subject": self.subject[i],
                "visit": torch.tensor(0), "video": torch.tensor(i)}


def build_tiny(seed: int = 0) -> torch.nn.Module:
    """The real MPDRM tiny model, narrowed and shrunk in frames and pixels, without dropout."""
    from mpdrm.model import build_model

    torch.manual_seed(seed)
    return build_model("tiny", num_subjects=SUBJECTS, frames=FRAMES, image_size=SIZE, dropout=0.0,
                       widths=(8, 8, 16, 16), norm_groups=4, embed_dim=16, hidden_dim=16)


def dp_loss() -> MPDRMLoss:
    """MPDRM's loss in its per-example mode (prototype contrastive, no batch terms)."""
    return MPDRMLoss(task="regression", lambda_c=0.5, lambda_o=0.1, per_example=True)


def mean_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Batch mean of the per-example losses, from a forward pass of ``model``."""
    loss, _ = dp_loss()(model(batch["clips"]), batch)
    return loss


def run_round(
    private: PrivateTraining,
    epochs: int = 1,
) -> int:
    """Train ``epochs`` Poisson epochs with ``private_step``; returns the steps taken."""
    steps = 0
    loss_fn = dp_loss()
    for _ in range(epochs):
        for batch in private.loader:
            private_step(private.model, batch, private.optimizer, loss_fn)
            steps += 1
    return steps


@pytest.fixture
def dataset() -> ClipDataset:
    return ClipDataset()


@pytest.fixture
def loader(dataset: ClipDataset) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def model() -> torch.nn.Module:
    return build_tiny()


@pytest.fixture
def make_model() -> Callable[..., torch.nn.Module]:
    return build_tiny


@pytest.fixture
def train_round() -> Callable[..., int]:
    return run_round


@pytest.fixture
def loss_fn() -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    return mean_loss


@pytest.fixture
def make_loader() -> Callable[..., DataLoader]:
    def make(n: int = N_EXAMPLES, batch: int = BATCH, seed: int = 0) -> DataLoader:
        return DataLoader(ClipDataset(n, seed), batch_size=batch, generator=torch.Generator().manual_seed(seed + 1))

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for these tests (restored after): on a shared 2-core machine
    two threads per process were 10-30x slower for these small per-example kernels."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
