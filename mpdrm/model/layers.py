"""Small building blocks shared by the networks: GroupNorm and conv + norm + activation."""
from __future__ import annotations

from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def _same_padding(kernel) -> tuple[int, int, int]:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


class ConvNormAct(nn.Sequential):
    """Conv3d (no bias) -> GroupNorm -> optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, *, norm_groups: int = 8, act: bool = True):
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        layers = [
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=_same_padding(kernel), bias=False),
            group_norm(cout, norm_groups),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)
