"""The cohort a simulation runs on: a given folder, or the default synthetic one (cached).

The functions live in the Flower-free :mod:`mpdrm.data.cohorts`; re-exported here for
the callers of ``simulations.cohort``.
"""
from __future__ import annotations

from mpdrm.data.cohorts import (
    COMPLETE_MARK,
    DEFAULT_SYNTHETIC_COHORT,
    cohort_key,
    ensure_synthetic_cohort,
    oracle_reference,
    prepare_cohort,
    run_cohort,
    score_max_of,
)

__all__ = [
    "COMPLETE_MARK",
    "DEFAULT_SYNTHETIC_COHORT",
    "cohort_key",
    "ensure_synthetic_cohort",
    "oracle_reference",
    "prepare_cohort",
    "run_cohort",
    "score_max_of",
]
