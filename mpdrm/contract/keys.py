"""Record and metric keys of the messages between a site and the coordinator.

Instruction: ArrayRecord :data:`ARRAYS` (the shared state), ConfigRecord :data:`CONFIG`
with :data:`SERVER_ROUND` and the run's ``train.*``/``eval.*`` settings.
Reply: ArrayRecord :data:`ARRAYS` (training only), MetricRecord :data:`METRICS` with
:data:`SITE_ID` and :data:`NUM_EXAMPLES`; under client-side DP also :data:`EPSILON` and the
``dp-*`` totals (:func:`dp_totals`). A site that declines a round sends no arrays, the
metric :data:`BUDGET_EXHAUSTED` = 1 when its privacy budget is the reason, and a
ConfigRecord :data:`DECLINED` with a human-readable ``reason``. A simulated site also sends
a ConfigRecord :data:`SITE` with its folder name (:data:`SITE_NAME`), so the coordinator can
name it in logs and the summary; a deployed site does not (the coordinator sees site ids).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DECLINED = "declined"
DECLINED_REASON = "reason"
SITE = "site"
SITE_NAME = "name"

SERVER_ROUND = "server-round"
SITE_ID = "site-id"
NUM_EXAMPLES = "num-examples"
BUDGET_EXHAUSTED = "budget-exhausted"

EPSILON = "epsilon"
DP_DELTA = "dp-delta"
DP_STEPS = "dp-steps"
DP_NOISE_MULTIPLIER = "dp-noise-multiplier"
DP_SAMPLE_RATE = "dp-sample-rate"
DP_PATIENT_LEVEL = "dp-patient-level"  # 1: the unit of privacy is a patient; 0: a clip
DP_PATIENTS = "dp-patients"  # patients in the site's training set


def budget_exhausted(metrics: Mapping[str, Any]) -> bool:
    """Whether a reply's metrics say the site declined because its privacy budget is spent."""
    value = metrics.get(BUDGET_EXHAUSTED, 0)
    return not isinstance(value, str) and bool(value)


def dp_totals(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"noise_multiplier", "sample_rate", "steps", "delta", "epsilon", "unit", "patients"}`` from a
    reply's metrics (``unit``: ``"patient"`` or ``"clip"``; ``sample_rate`` is that unit's rate).

    ``None`` when the reply carries no client-side DP figures.
    """
    if EPSILON not in metrics or DP_STEPS not in metrics:
        return None
    return {
        "noise_multiplier": metrics.get(DP_NOISE_MULTIPLIER),
        "sample_rate": metrics.get(DP_SAMPLE_RATE),
        "steps": int(metrics[DP_STEPS]),
        "delta": metrics.get(DP_DELTA),
        "epsilon": metrics[EPSILON],
        "unit": "patient" if metrics.get(DP_PATIENT_LEVEL, 0) else "clip",
        "patients": int(metrics[DP_PATIENTS]) if DP_PATIENTS in metrics else None,
    }
