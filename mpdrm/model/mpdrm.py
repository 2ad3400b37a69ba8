"""The MPDRM module (MDFN + MPFN + RARM + output head) and `build_model`.

Top-level submodules, and so the state_dict prefixes:

- ``depression.*``  MDFN (shared with the federation)
- ``personality.*`` MPFN, its projection head and its prototypes (stays on the site)
- ``rarm.*``        RARM (shared; absent with ``use_rarm=False``)
- ``head.*``        output head (shared)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MPDRMConfig, make_config
from .depression import DepressionNetwork
from .personality import PersonalityNetwork
from .rarm import RARM, OutputHead


@dataclass
class MPDRMOutput:
    """What `MPDRM.forward` returns.

    prediction: (B,) normalised score (regression) or (B, K) logits (classification)
    depression: (B, D) depression vector d (mean of MDFN's tokens, before suppression)
    personality: (B, E) unit-norm personality embedding p, or None without MPFN
    prototype_similarity: (B, S) cosine of p to each subject prototype, or None
    attention: (B, T') RARM pooling weights, or None without RARM
    """

    prediction: torch.Tensor
    depression: torch.Tensor
    personality: torch.Tensor | None = None
    prototype_similarity: torch.Tensor | None = None
    attention: torch.Tensor | None = None


class MPDRM(nn.Module):
    def __init__(self, config: MPDRMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.depression = DepressionNetwork(config)
        self.personality = PersonalityNetwork(config) if config.use_mpfn else None
        self.rarm = (RARM(d, config.hidden_dim, personality_dim=d if config.use_mpfn else None)
                     if config.use_rarm else None)
        self.head = OutputHead(d, config.hidden_dim, config.output_dim, config.dropout)

    def _check(self, clips: torch.Tensor) -> None:
        if clips.dim() != 5 or clips.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected clips shaped (batch, {self.config.in_channels}, frames, height, width), "
                f"got {tuple(clips.shape)}; set in_channels to match the data"
            )

    def personality_embedding(self, clips: torch.Tensor) -> torch.Tensor | None:
        """p for each clip (B, E), or None without MPFN."""
        if self.personality is None:
            return None
        self._check(clips)
        return self.personality(clips)

    def forward(self, clips: torch.Tensor, personality: torch.Tensor | None = None) -> MPDRMOutput:
        """clips (B, C, T, H, W). `personality` (B, E), optional, replaces the embedding MPFN
        would compute from the clip (e.g. a subject's mean embedding); it is re-normalised."""
        self._check(clips)
        tokens, d = self.depression(clips)
        p = None
        sim = None
        if self.personality is not None:
            p = F.normalize(personality, dim=-1) if personality is not None else self.personality(clips)
            sim = self.personality.prototype_similarity(p)
        elif personality is not None:
            raise ValueError("this model has no personality branch (use_mpfn=False)")
        attn = None
        if self.rarm is not None:
            z, attn = self.rarm(tokens, p.detach() if p is not None and self.config.isolate_personality else p)
        else:
            z = d
        pred = self.head(z)
        if p is not None and self.personality.offset is not None:
            pred = pred + self.personality.offset(p.detach())
        if self.config.task == "regression":
            pred = pred.squeeze(-1)
        return MPDRMOutput(prediction=pred, depression=d, personality=p, prototype_similarity=sim,
                           attention=attn)


def build_model(size_or_config: str | MPDRMConfig | dict = "tiny", **overrides: Any) -> MPDRM:
    """An MPDRM from a size name ('tiny' | 'base' | 'paper'), a config or a dict, with overrides,
    e.g. ``build_model('tiny', num_subjects=12, use_mmp=False)``."""
    return MPDRM(make_config(size_or_config, **overrides))
