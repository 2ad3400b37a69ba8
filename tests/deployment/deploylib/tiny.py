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


def tiny_cohort(root: Path, sites: int) -> Path:
    """A synthetic cohort of ``sites`` sites, 3 subjects x 2 visits x 3 s each (unprepared:
    each site prepares its clips itself, as a hospital would)."""
    from mpdrm.data.synth import generate_cohort

    return Path(generate_cohort(root / "cohort", sites=sites, subjects=3, visits=2, seconds=3.0,
                                seed=0, workers=1))
