"""Model configuration: the `MPDRMConfig` dataclass and the named sizes.

Sizes (each a complete config; any field can be overridden by keyword):

- ``tiny``  -- CPU default. 1x16x64x64 clips (grayscale, 16 frames, 64 px). A 3x5x5 stem with
  spatial stride 2 and a spatially strided first stage bring the map to 16x16x16 quickly; widths
  16/32/64/128 (multiples of 16: oneDNN's fast CPU kernels; 24/48 ran 3-5x slower), one residual
  block per stage, 8 time steps at the last stage. About 3.3 GFLOP per clip for a training step
  (both networks, forward + backward); one full training step at batch 16 took 0.2-0.35 s on
  2 otherwise idle cores (benchmarks/model_cost.py measures it).
- ``base``  -- 112 px grayscale, widths 32/64/128/256, one block per stage.
- ``paper`` -- 3D-ResNet-18 (widths 64/128/256/512, two blocks per stage, 3x7x7 stem) at 112 px,
  RGB; for GPUs.

Temporal resolution: every size keeps several time steps at the last stage (tiny 8, base and
paper 4) because RARM attends over per-time-step tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TASKS = ("regression", "classification")
DEPRESSION_INPUTS = ("frames", "motion")


@dataclass
class MPDRMConfig:
    """Everything `build_model` needs. Tuples are per stage where noted."""

    size: str = "tiny"
    in_channels: int = 1
    frames: int = 16
    image_size: int = 64
    # backbone (shared by MDFN and MPFN: same topology, separate weights)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    # (temporal, spatial) stride of the first block of each stage
    strides: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (1, 2), (1, 1))
    stem_kernel: tuple[int, int, int] = (3, 5, 5)
    stem_stride: tuple[int, int, int] = (1, 2, 2)
    norm_groups: int = 8
    # MMP: temporal-difference offsets, temporal max-pool kernels, branch width = C // reduction
    mmp_diffs: tuple[int, ...] = (1, 2)
    mmp_pools: tuple[int, ...] = (2, 3, 4)
    mmp_reduction: int = 2
    # dimension of both the depression vector d and the personality embedding p
    embed_dim: int = 64
    # number of learnable personality prototypes (site-local training subjects); 0 = none
    num_subjects: int = 0
    hidden_dim: int = 64  # RARM attention / relation MLPs and the output head
    dropout: float = 0.1  # before the last layer of the output head
    task: str = "regression"
    num_classes: int = 2  # classification only
    # ablations
    use_mmp: bool = True
    use_mpfn: bool = True
    use_rarm: bool = True
    use_orthogonality: bool = True  # loss-level: the training loss reads it
    # RARM reads p detached: the task loss does not train MPFN, which then learns only from the
    # contrastive (and orthogonality) terms; False (the default) lets the task gradient reach MPFN
    # through RARM
    isolate_personality: bool = False
    # a site-local linear map from p (detached) to an offset added to the prediction: lets a site
    # correct a known person's habitual bias (and its own mean bias) without the shared head
    personal_offset: bool = False
    # what MDFN (the depression branch) reads: "frames" (the clip as it is) or "motion" (each
    # pixel minus its mean over the clip's frames: what stays still, such as the shape of a
    # face, a camera's tone, is removed before the first convolution; MPFN always reads frames)
    depression_input: str = "frames"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.blocks = tuple(int(b) for b in self.blocks)
        self.strides = tuple((int(s[0]), int(s[1])) for s in self.strides)
        self.stem_kernel = tuple(int(k) for k in self.stem_kernel)  # type: ignore[assignment]
        self.stem_stride = tuple(int(s) for s in self.stem_stride)  # type: ignore[assignment]
        self.mmp_diffs = tuple(int(k) for k in self.mmp_diffs)
        self.mmp_pools = tuple(int(s) for s in self.mmp_pools)
        self.validate()

    def validate(self) -> None:
        if self.depression_input not in DEPRESSION_INPUTS:
            raise ValueError(f"depression_input must be one of {DEPRESSION_INPUTS}, got {self.depression_input!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and self.num_classes < 2:
            raise ValueError("classification needs num_classes >= 2")
        n = len(self.widths)
        if n < 1 or len(self.blocks) != n or len(self.strides) != n:
            raise ValueError("widths, blocks and strides must have one entry per stage")
        if any(b < 1 for b in self.blocks) or any(w < 1 for w in self.widths):
            raise ValueError("every stage needs at least one block and one channel")
        if self.num_subjects < 0:
            raise ValueError("num_subjects must be >= 0")
        if self.embed_dim < 1 or self.hidden_dim < 1:
            raise ValueError("embed_dim and hidden_dim must be positive")
        if len(self.stem_kernel) != 3 or len(self.stem_stride) != 3:
            raise ValueError("stem_kernel and stem_stride are (t, h, w) triples")

    @property
    def output_dim(self) -> int:
        return 1 if self.task == "regression" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "base": dict(
        image_size=112,
        widths=(32, 64, 128, 256),
        blocks=(1, 1, 1, 1),
        strides=((1, 2), (2, 2), (2, 2), (1, 2)),
        stem_kernel=(3, 7, 7),
        stem_stride=(1, 2, 2),
        embed_dim=128,
        hidden_dim=128,
    ),
    "paper": dict(
        in_channels=3,
        image_size=112,
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        strides=((1, 1), (2, 2), (2, 2), (1, 2)),
        stem_kernel=(3, 7, 7),
        stem_stride=(1, 2, 2),
        norm_groups=32,
        embed_dim=256,
        hidden_dim=256,
    ),
}


def make_config(size_or_config: str | MPDRMConfig | dict = "tiny", **overrides: Any) -> MPDRMConfig:
    """A config from a size name, a config, or a dict of fields, with keyword overrides."""
    if isinstance(size_or_config, MPDRMConfig):
        base = size_or_config.to_dict()
    elif isinstance(size_or_config, dict):
        base = dict(size_or_config)
        size = base.get("size", "tiny")
        base = {**_size_fields(size), **base}
    else:
        base = _size_fields(str(size_or_config))
    known = {f.name for f in dataclasses.fields(MPDRMConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown MPDRMConfig field(s): {', '.join(unknown)}")
    base.update(overrides)
    return MPDRMConfig(**base)


def _size_fields(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(MPDRMConfig)}
    return {**defaults, **SIZES[size], "size": size}


__all__ = ["MPDRMConfig", "SIZES", "TASKS", "make_config"]
