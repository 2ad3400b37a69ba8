"""MPDRM: the personalised depression recognition model, its losses, metrics and local training.

Public API (docs/interfaces.md): `MPDRMConfig`, `build_model`, `MPDRM`, `MPDRMOutput`,
`partition`, `shared_state`, `local_state` (+ `load_shared_state`, `load_local_state`).
Losses live in `mpdrm.losses`, metrics in `mpdrm.metrics`, the loop in `mpdrm.training`.
This package imports no Flower (and, at import time, not `mpdrm.data`).
"""
from .config import SIZES, MPDRMConfig, make_config
from .model import MPDRM, MPDRMOutput, build_model
from .partition import (LOCAL_PREFIX, load_local_state, load_shared_state, local_state, partition,
                        shared_state, unwrap)

__all__ = [
    "MPDRMConfig", "SIZES", "make_config", "MPDRM", "MPDRMOutput", "build_model",
    "LOCAL_PREFIX", "partition", "shared_state", "local_state", "load_shared_state",
    "load_local_state", "unwrap",
]
