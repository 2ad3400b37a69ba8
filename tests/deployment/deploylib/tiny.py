"""The smallest cohort and run config the deployed FedMPDRM tests use (as in tests/federation)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: Run-config entries of a tiny, fast run. Only keys of ``[tool.flwr.app.config]`` can be
#: overridden in a deployment (``model.image_size`` cannot: the size preset sets it).
TINY_RUN: dict[str, Any] = {
    "seed": 0,
    "model.size": "tiny",
    "data.batch_size": 4,
    "data.pk_p": 2,
    "data.pk_k": 2,
    "data.eval_batch_size": 8,
    "train.epochs": 1,
}


def tiny_cohort(root: Path, sites: int, run_config: dict[str, Any] | None = None) -> Path:
    """A synthetic cohort of ``sites`` sites, 3 subjects x 2 visits x 3 s each; every site
    prepared with ``mpdrm-data prepare`` for ``run_config`` (default :data:`TINY_RUN`), as a
    hospital does before starting its SuperNode (a ClientApp never prepares)."""
    from mpdrm.data.synth import generate_cohort

    from .harness import prepare_site_data

    cohort = Path(generate_cohort(root / "cohort", sites=sites, subjects=3, visits=2,
                                  seconds=3.0, seed=0, workers=1))
    for site in sorted(p for p in cohort.iterdir() if (p / "manifest.csv").is_file()):
        prepare_site_data(site, TINY_RUN if run_config is None else run_config)
    return cohort
