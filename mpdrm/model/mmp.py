"""MMP: the multi-scale motion pattern extraction block (docs/architecture.md, section 3).

On a feature map F of shape (B, C, T, H, W), parallel branches:

- motion: absolute temporal differences |F(t+k) - F(t)| for each k in ``diffs`` (default 1, 2),
  assigned to time t and zero-padded at the end so the length stays T;
- persistence: temporal max-pooling with kernel s for each s in ``pools`` (default 2, 3, 4),
  stride 1, replicate-padded ((s-1)//2 before, the rest after) so the length stays T;

each followed by a 1x3x3 conv + GroupNorm + ReLU to ``branch_channels``. The branch outputs are
concatenated, fused by a 1x1x1 conv + GroupNorm back to C, added to F (residual), then ReLU.

Every operation acts on one example at a time (no batch statistics), so per-sample gradients
are exact, and all trainable parameters live in nn.Conv3d / nn.GroupNorm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, group_norm


def temporal_difference(x: torch.Tensor, k: int) -> torch.Tensor:
    """|x[:, :, t+k] - x[:, :, t]| at time t, zeros for the last k steps; same shape as x."""
    t = x.shape[2]
    if k >= t:
        return torch.zeros_like(x)
    d = (x[:, :, k:] - x[:, :, :-k]).abs()
    return F.pad(d, (0, 0, 0, 0, 0, k))


def temporal_max_pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """Max over a temporal window of s steps (stride 1); same shape as x."""
    if s <= 1:
        return x
    before = (s - 1) // 2
    after = s - 1 - before
    padded = F.pad(x, (0, 0, 0, 0, before, after), mode="replicate")
    return F.max_pool3d(padded, kernel_size=(s, 1, 1), stride=1)


class MMP(nn.Module):
    def __init__(
        self,
        channels: int,
        *,
        diffs: tuple[int, ...] = (1, 2),
        pools: tuple[int, ...] = (2, 3, 4),
        reduction: int = 2,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if not diffs and not pools:
            raise ValueError("MMP needs at least one branch")
        self.diffs = tuple(diffs)
        self.pools = tuple(pools)
        branch = max(1, channels // max(1, reduction))
        n = len(self.diffs) + len(self.pools)
        self.branches = nn.ModuleList(
            ConvNormAct(channels, branch, (1, 3, 3), norm_groups=norm_groups) for _ in range(n)
        )
        self.fuse = nn.Conv3d(branch * n, channels, kernel_size=1, bias=False)
        self.fuse_norm = group_norm(channels, norm_groups)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = [temporal_difference(x, k) for k in self.diffs]
        inputs += [temporal_max_pool(x, s) for s in self.pools]
        feats = [branch(inp) for branch, inp in zip(self.branches, inputs)]
        fused = self.fuse_norm(self.fuse(torch.cat(feats, dim=1)))
        return self.act(x + fused)
