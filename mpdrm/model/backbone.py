"""The 3D residual backbone shared (as a topology) by MDFN and MPFN.

stem conv (+GroupNorm, ReLU) -> residual stages of basic 3D blocks (3x3x3 convs, GroupNorm)
-> an MMP block after every stage from the second on -> outputs

- ``tokens`` (B, T', C): the last feature map averaged over space only, one token per time step;
- ``global`` (B, C): the mean of the tokens (= global average pooling).

With ``paper`` widths 64/128/256/512 and two blocks per stage this is 3D-ResNet-18 (with GroupNorm
instead of BatchNorm) plus MMP.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MPDRMConfig
from .layers import ConvNormAct, group_norm
from .mmp import MMP


class BasicBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], norm_groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(cout, norm_groups)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = group_norm(cout, norm_groups)
        self.act = nn.ReLU()
        if cin != cout or any(s != 1 for s in stride):
            self.shortcut = ConvNormAct(cin, cout, 1, stride=stride, norm_groups=norm_groups, act=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, stride: tuple[int, int], *, mmp: bool,
                 cfg: MPDRMConfig) -> None:
        super().__init__()
        st = (stride[0], stride[1], stride[1])
        self.blocks = nn.Sequential(
            *(BasicBlock3d(cin if i == 0 else cout, cout, st if i == 0 else (1, 1, 1), cfg.norm_groups)
              for i in range(blocks))
        )
        self.mmp = (
            MMP(cout, diffs=cfg.mmp_diffs, pools=cfg.mmp_pools, reduction=cfg.mmp_reduction,
                norm_groups=cfg.norm_groups)
            if mmp else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.mmp(x) if self.mmp is not None else x


class Backbone(nn.Module):
    def __init__(self, cfg: MPDRMConfig) -> None:
        super().__init__()
        self.stem = ConvNormAct(cfg.in_channels, cfg.widths[0], cfg.stem_kernel, stride=cfg.stem_stride,
                                norm_groups=cfg.norm_groups)
        stages = []
        cin = cfg.widths[0]
        for i, (w, b, s) in enumerate(zip(cfg.widths, cfg.blocks, cfg.strides)):
            stages.append(Stage(cin, w, b, s, mmp=cfg.use_mmp and i >= 1, cfg=cfg))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin
        _init_weights(self)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(clips)
        for stage in self.stages:
            x = stage(x)
        tokens = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T', C)
        return tokens, tokens.mean(dim=1)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
