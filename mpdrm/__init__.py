"""MPDRM: the personalised depression recognition model, its losses, metrics and local training.

Public API (docs/interfaces.md): `MPDRMConfig`, `build_model`, `MPDRM`, `MPDRMOutput`,
`partition`, `shared_state`, `local_state` (+ `load_shared_state`, `load_local_state`).
Losses live in `mpdrm.losses`, metrics in `mpdrm.metrics`, the loop in `mpdrm.training`,
the run contract both Flower apps share in `mpdrm.contract`.

This package imports no Flower. Exports are lazy, so importing a light submodule (for
example ``mpdrm.contract.keys`` from the strategies) does not pull in torch.
"""
from __future__ import annotations

from mpdrm.lazy import lazy_exports


_EXPORTS = {
    "MPDRMConfig": "mpdrm.config",
    "SIZES": "mpdrm.config",
    "make_config": "mpdrm.config",
    "MPDRM": "mpdrm.model",
    "MPDRMOutput": "mpdrm.model",
    "build_model": "mpdrm.model",
    "LOCAL_PREFIX": "mpdrm.partitioning",
    "partition": "mpdrm.partitioning",
    "shared_state": "mpdrm.partitioning",
    "local_state": "mpdrm.partitioning",
    "load_shared_state": "mpdrm.partitioning",
    "load_local_state": "mpdrm.partitioning",
    "unwrap": "mpdrm.partitioning",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("mpdrm", globals(), _EXPORTS)
