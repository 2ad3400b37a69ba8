"""Fixtures for the DP tests: a small real MPDRM, a tiny site dataset, a per-example loss,
and a minimal DP training round (the client's loop lives elsewhere)."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mpdrm.privacy import PrivateTraining, is_empty_batch

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
        return {"clips": self.clips[i], "target": self.target[i], "subject": self.subject[i]}


def build_tiny(seed: int = 0) -> torch.nn.Module:
    """The real MPDRM tiny model, shrunk in frames and pixels, without dropout."""
    from mpdrm.model import build_model

    torch.manual_seed(seed)
    return build_model("tiny", num_subjects=SUBJECTS, frames=FRAMES, image_size=SIZE, dropout=0.0)


def per_example_losses(out, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) per-example loss: task + prototype contrastive + orthogonality; no batch coupling."""
    task = (out.prediction - batch["target"]) ** 2
    proto = F.cross_entropy(out.prototype_similarity / 0.1, batch["subject"], reduction="none")
    ortho = (F.normalize(out.depression, dim=-1) * out.personality).sum(-1) ** 2
    return task + 0.5 * proto + 0.1 * ortho


def mean_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return per_example_losses(model(batch["clips"]), batch).mean()


def run_round(
    private: PrivateTraining,
    epochs: int = 1,
    loss: Callable[[torch.nn.Module, dict], torch.Tensor] = mean_loss,
) -> int:
    """Train ``epochs`` Poisson epochs; returns the optimizer steps taken."""
    steps = 0
    for _ in range(epochs):
        for batch in private.loader:
            if is_empty_batch(batch):
                private.noise_only_step()
            else:
                private.optimizer.zero_grad(set_to_none=True)
                loss(private.model, batch).backward()
                private.optimizer.step()
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
