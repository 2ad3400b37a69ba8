"""One site's data pipeline: site folders, video ingestion, clip cache, datasets, synthetic
cohort. See mpdrm/data/README.md. Exports are lazy so that importing a submodule (e.g. in a
worker process) does not pull in torch."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_site": "mpdrm.data.dataset",
    "SiteData": "mpdrm.data.dataset",
    "ClipDataset": "mpdrm.data.dataset",
    "PrepareConfig": "mpdrm.data.prepare",
    "prepare_site": "mpdrm.data.prepare",
    "PrepareResult": "mpdrm.data.prepare",
    "generate_cohort": "mpdrm.data.synth",
    "PKBatchSampler": "mpdrm.data.sampler",
    "check_site": "mpdrm.data.check",
    "read_manifest": "mpdrm.data.manifest",
    "subject_split": "mpdrm.data.splits",
    "kfold_subjects": "mpdrm.data.splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mpdrm.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
