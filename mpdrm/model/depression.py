"""MDFN: the multi-scale depression feature network.

The backbone (with MMP) followed by a linear projection of each time-step token to ``embed_dim``.
Returns the depression tokens d_t (B, T', D) and the depression vector d = mean_t d_t (B, D).
D equals the personality embedding size, so d and p live in spaces of the same dimension (the
per-example orthogonality loss compares them).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MPDRMConfig
from .backbone import Backbone


class DepressionNetwork(nn.Module):
    def __init__(self, cfg: MPDRMConfig) -> None:
        super().__init__()
        self.backbone = Backbone(cfg)
        self.proj = nn.Linear(self.backbone.out_channels, cfg.embed_dim)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = self.backbone(clips)
        tokens = self.proj(tokens)  # one call over all tokens (B, T', D)
        return tokens, tokens.mean(dim=1)
