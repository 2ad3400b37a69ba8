"""Site calibration: a site's own offset added to the shared model's scores (``eval.calibration``).

Why: under federated averaging the shared head is pulled towards the mean score of all sites,
while sites differ in their patients (the default synthetic cohort: mean severity 0.30, 0.65 and
0.475 at its three sites) and cameras. The measured consequence (docs/benchmarks.md, "Site
calibration"): a site's mean error on its scored visits reached -0.30 of the scale, and at the
worst sites it was almost the whole error. The same model's mean error on the site's *training*
videos points the same way, and the site knows those videos' scores.

``offset``: after the aggregate arrives, the site scores its training videos with the model it
is about to evaluate and adds ``b = mean over training videos (target - prediction)`` to every
score it reports or serves. One number per site and round, fitted on data that never leaves the
site, never sent anywhere (only the evaluation metrics are, as without calibration); it changes
no weight and no training step. ``none``: the shared model's scores as they are.

Regression only (a class probability is not shifted).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from .metrics import video_level

if TYPE_CHECKING:  # the run-config check imports the choices without torch
    import torch

CALIBRATIONS = ("none", "offset")


def check_calibration(name: str) -> str:
    """``name`` if known; ValueError naming the choices otherwise."""
    if name not in CALIBRATIONS:
        raise ValueError(f"eval.calibration must be one of {CALIBRATIONS}, got {name!r}")
    return name


def site_offset(prediction: np.ndarray, target: np.ndarray, video: np.ndarray) -> float:
    """``mean over videos (target - prediction)``, each video weighted once whatever its clips.

    Parameters
    ----------
    prediction, target, video
        Per clip (N,): the model's normalised score, the video's normalised score, the video id.
    """
    if len(prediction) == 0:
        raise ValueError("no training clips to calibrate on")
    per_video_prediction, per_video_target = video_level(prediction, target, video, "regression")
    return float(np.mean(per_video_target - per_video_prediction))


def training_personality(scoring: str) -> str:
    """How p is chosen when a site scores its own training clips for the offset: each clip's own
    when scored people are unknown (``clip``), else each training subject's mean over its clips
    (the reference a known person is scored with)."""
    return "clip" if scoring == "clip" else "subject_mean"


def fit_site_offset(model: torch.nn.Module, training: Iterable[Mapping[str, torch.Tensor]], *,
                    scoring: str = "clip", device: str = "auto") -> float:
    """The ``offset`` calibration of ``model`` at a site: :func:`site_offset` over its training
    batches, p chosen by :func:`training_personality` of the evaluation's ``scoring`` mode."""
    from .training import predict  # noqa: PLC0415 (training imports this module's users)

    out = predict(model, training, personality=training_personality(scoring), device=device)
    return site_offset(out["prediction"], out["target"], out["video"])


__all__ = ["CALIBRATIONS", "check_calibration", "fit_site_offset", "site_offset", "training_personality"]
