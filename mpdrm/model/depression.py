"""MDFN: the multi-scale depression feature network.

The backbone (with MMP) followed by a linear projection of each time-step token to ``embed_dim``.
With ``depression_input="motion"`` it reads each clip with its still part removed
(:func:`still_removed`), so appearance that identifies a person or a camera cannot reach it.
Returns the depression tokens d_t (B, T', D) and the depression vector d = mean_t d_t (B, D).
D equals the personality embedding size, so d and p live in spaces of the same dimension (the
per-example orthogonality loss compares them).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MPDRMConfig
from .backbone import Backbone


def still_removed(clips: torch.Tensor) -> torch.Tensor:
    """Each pixel minus its mean over the clip's frames (B, C, T, H, W): only what moves is left."""
    return clips - clips.mean(dim=2, keepdim=True)


class DepressionNetwork(nn.Module):
    def __init__(self, cfg: MPDRMConfig) -> None:
        super().__init__()
        self.backbone = Backbone(cfg)
        self.proj = nn.Linear(self.backbone.out_channels, cfg.embed_dim)
        self.reads_motion = cfg.depression_input == "motion"

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reads_motion:
            clips = still_removed(clips)
        tokens, _ = self.backbone(clips)
        tokens = self.proj(tokens)  # one call over all tokens (B, T', D)
        return tokens, tokens.mean(dim=1)
