"""How much of a ``visits`` run's error is a stable per-person bias?

Under ``eval.protocol=visits`` every subject's last visit is scored and its earlier visits
trained the model. For every site of a finished run, each video is scored by the site's final
model (the subject's reference p when the model has a personality branch), and per subject:

- ``residual``: prediction - target on the scored visit (normalised score);
- ``bias``: the mean residual over the subject's training visits (in-sample: the model was fitted
  to them, so this underestimates the bias an unseen visit would show).

Reported per run and site: ``rmse`` (the scored visits), ``rmse_without_bias`` (each residual
minus its subject's bias: what a site that knew each person's past errors could reach),
``bias_rmse`` and ``bias_residual_correlation``, and whether the model follows each person's
change of state between visits (:func:`tracking_figures`: ``change_correlation``,
``change_gain``, ``memory_rmse``). A large drop from ``rmse`` to
``rmse_without_bias`` means the error is mostly a stable per-person offset - exactly what the
personality branch is meant to remove - rather than per-visit noise.

    python benchmarks/personal_bias.py RUN_DIR [RUN_DIR ...] [--out FILE]
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a script: the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.personality_use import run_locations, site_videos  # noqa: E402
from benchmarks.run_probe import probe_main  # noqa: E402
from mpdrm.inference.model import SiteModel, load_model_dir  # noqa: E402


def visit_predictions(model: SiteModel, site_folder: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Subject -> ``[(visit, prediction, target), ...]`` over the site's manifest (normalised)."""
    out: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for entry, clips in site_videos(model, site_folder):
        known = entry["subject"] if model.has_personality and entry["subject"] in model.subjects() else None
        prediction = float(np.mean(model.score_clips(clips, subject=known).prediction))
        out[entry["subject"]].append((int(entry["visit"]), prediction, float(entry["score"]) / model.score_max))
    return out


def residuals_of(predictions: dict[str, list[tuple[int, float, float]]]) -> dict[str, list[tuple[int, float]]]:
    """Subject -> ``[(visit, prediction - target), ...]``."""
    return {s: [(v, p - t) for v, p, t in visits] for s, visits in predictions.items()}


def visit_residuals(model: SiteModel, site_folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Subject -> ``[(visit, prediction - target), ...]`` over the site's manifest."""
    return residuals_of(visit_predictions(model, site_folder))


def split_change(predictions: dict[str, list[tuple[int, float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject with two or more visits: ``(predicted change, true change, memory error)``.

    A change is the last (scored) visit minus the mean of the earlier ones; the memory error is
    the mean target of the earlier visits minus the last target (the ``person_memory`` reference).
    """
    predicted, true, memory = [], [], []
    for visits in predictions.values():
        if len(visits) < 2:
            continue
        *earlier, (_, last_pred, last_target) = sorted(visits)
        past_target = float(np.mean([t for _, _, t in earlier]))
        predicted.append(last_pred - float(np.mean([p for _, p, _ in earlier])))
        true.append(last_target - past_target)
        memory.append(past_target - last_target)
    return np.array(predicted), np.array(true), np.array(memory)


def tracking_figures(predicted: np.ndarray, true: np.ndarray, memory: np.ndarray) -> dict[str, float]:
    """Does the model follow a known person's change of state, or only recognise the person?

    ``change_correlation`` is ~1 for a model that reads each visit's state and ~0 for one that
    predicts a person's past scores whatever the visit shows; ``change_gain`` is the slope of
    predicted on true change (1: the full change followed, 0: none); ``memory_rmse`` is the
    error of the ``person_memory`` reference on the same visits.
    """
    defined = len(true) > 2 and predicted.std() > 0 and true.std() > 0
    return {"change_correlation": float(np.corrcoef(predicted, true)[0, 1]) if defined else float("nan"),
            "change_gain": float(np.dot(predicted, true) / np.dot(true, true)) if len(true) and true.any() else float("nan"),
            "memory_rmse": float(np.sqrt(np.mean(memory ** 2))) if len(memory) else float("nan")}


def split_bias(residuals: dict[str, list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(scored residuals, biases)``: each subject with two or more visits, last visit scored."""
    scored, biases = [], []
    for visits in residuals.values():
        if len(visits) < 2:
            continue
        visits = sorted(visits)
        scored.append(visits[-1][1])
        biases.append(float(np.mean([r for _, r in visits[:-1]])))
    return np.array(scored), np.array(biases)


def figures(scored: np.ndarray, biases: np.ndarray) -> dict[str, float]:
    """RMSE before and after removing each subject's bias, and how the two relate."""
    corr = float(np.corrcoef(scored, biases)[0, 1]) if len(scored) > 2 and scored.std() and biases.std() else float("nan")
    return {"subjects": int(len(scored)), "rmse": float(np.sqrt(np.mean(scored ** 2))),
            "rmse_without_bias": float(np.sqrt(np.mean((scored - biases) ** 2))),
            "bias_rmse": float(np.sqrt(np.mean(biases ** 2))), "bias_residual_correlation": corr}


def run_report(run_dir: Path) -> dict[str, Any]:
    """Per site and pooled over the run's sites."""
    state_root, cohort = run_locations(run_dir)
    sites, pooled_scored, pooled_bias, pooled_change = {}, [], [], []
    for state in sorted(p for p in state_root.iterdir() if (p / "model").is_dir()):
        predictions = visit_predictions(load_model_dir(state / "model"), cohort / state.name)
        scored, biases = split_bias(residuals_of(predictions))
        change = split_change(predictions)
        sites[state.name] = {**figures(scored, biases), **tracking_figures(*change)}
        pooled_scored.append(scored)
        pooled_bias.append(biases)
        pooled_change.append(change)
    if not sites:
        raise SystemExit(f"{run_dir}: no site model under {state_root}")
    pooled = [np.concatenate([c[i] for c in pooled_change]) for i in range(3)]
    return {"run": str(run_dir), "sites": sites,
            "overall": {**figures(np.concatenate(pooled_scored), np.concatenate(pooled_bias)),
                        **tracking_figures(*pooled)}}


def describe(report: dict[str, Any]) -> str:
    """One line per run: its overall figures."""
    return Path(report["run"]).name + " " + " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report["overall"].items())


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__, run_report, describe, argv)


if __name__ == "__main__":
    raise SystemExit(main())
