"""One site's data pipeline: site folders, video ingestion, clip cache, datasets, synthetic
cohort. See mpdrm/data/README.md. Exports are lazy so that importing a submodule (e.g. in a
worker process) does not pull in torch."""
from __future__ import annotations

from mpdrm.lazy import lazy_exports


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


__getattr__, __dir__ = lazy_exports("mpdrm.data", globals(), _EXPORTS)
