"""Training-time clip augmentation: random, per clip, seeded, applied to a batch.

Why: on the synthetic cohort the model fits its training clips (task MSE about 0.01, RMSE 0.1)
while held-out visits of the *same* people score 0.16-0.28 (docs/benchmarks.md): it learns to
recognise a video (a face's geometry, skin, the site's camera) rather than the movements that
carry severity. Each transform below changes appearance and leaves the dynamics a clip's label
depends on (smile, blink, head and gaze rates and amplitudes) unchanged:

- ``flip``: mirror left-right (the horizontal axis, W), with probability 1/2;
- ``photometric``: brightness and contrast, ``x' = (x - m) * c + m + b`` with the clip's mean
  ``m``, ``c = exp(U(-s, s))``, ``b = U(-s, s) / 2`` (one draw per clip, all frames alike, so
  temporal change is untouched), clamped to [0, 1];
- ``reverse``: play the clip backwards (the time axis, T), with probability 1/2.

Names are composed with commas (``'train.augment=[flip,photometric]'`` on the command line); the empty string is off.
Every draw comes from one ``torch.Generator`` the training loop seeds from ``TrainConfig.seed``,
so a run is reproducible, and each clip is transformed on its own (a per-sample function, so
DP-SGD's per-sample gradients and accounting are unchanged). Evaluation never augments.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

AUGMENTATIONS = ("flip", "photometric", "reverse")


def parse_augment(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``'flip, photometric'``, ``'["flip", "photometric"]'`` (a flattened Hydra list) or a list
    -> ``('flip', 'photometric')``; unknown names raise ValueError."""
    if isinstance(spec, str):
        text = spec.strip()
        spec = json.loads(text) if text.startswith("[") else text.split(",")
    names = tuple(str(n).strip() for n in (spec or ()) if str(n).strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}: choose from {AUGMENTATIONS} (comma-separated)")
    return names


def _per_clip(draws: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
    """Shape (B,) draws to broadcast over (B, C, T, H, W)."""
    return draws.view(-1, *([1] * (clips.dim() - 1)))


def flip(clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each clip left-right with probability 1/2."""
    chosen = torch.rand(clips.shape[0], generator=gen) < 0.5
    return torch.where(_per_clip(chosen.to(clips.device), clips), clips.flip(-1), clips)


def reverse(clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Play each clip backwards with probability 1/2."""
    chosen = torch.rand(clips.shape[0], generator=gen) < 0.5
    return torch.where(_per_clip(chosen.to(clips.device), clips), clips.flip(2), clips)


def photometric(clips: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """One brightness and contrast change per clip (see the module docstring)."""
    n = clips.shape[0]
    contrast = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * strength).to(clips)
    shift = ((torch.rand(n, generator=gen) * 2 - 1) * strength / 2).to(clips)
    mean = clips.mean(dim=tuple(range(1, clips.dim())), keepdim=True)
    out = (clips - mean) * _per_clip(contrast, clips) + mean + _per_clip(shift, clips)
    return out.clamp_(0.0, 1.0)


@dataclass(frozen=True)
class ClipAugment:
    """The composed augmentation of a training run.

    Parameters
    ----------
    names
        Transforms to apply, in this order (see :data:`AUGMENTATIONS`).
    strength
        ``photometric``'s range ``s`` (log-contrast and twice the brightness shift).
    seed
        Seeds the generator of every draw.
    """

    names: tuple[str, ...]
    strength: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        parse_augment(",".join(self.names))
        if not 0 <= self.strength <= 1:
            raise ValueError(f"augment_strength must be in [0, 1], got {self.strength}")
        object.__setattr__(self, "_gen", torch.Generator().manual_seed(int(self.seed) % 2**63))

    def clips(self, clips: torch.Tensor) -> torch.Tensor:
        """The transformed (B, C, T, H, W) batch (a new tensor; the input is untouched)."""
        gen: torch.Generator = self._gen  # type: ignore[attr-defined]
        for name in self.names:
            clips = photometric(clips, gen, self.strength) if name == "photometric" else \
                (flip if name == "flip" else reverse)(clips, gen)
        return clips

    def batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``batch`` with its ``clips`` transformed; every other field as it was."""
        if not self.names:
            return dict(batch)
        return {**batch, "clips": self.clips(batch["clips"])}
