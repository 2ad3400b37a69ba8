"""How much of a ``visits`` run's error is a stable per-person bias?

Under ``eval.protocol=visits`` every subject's last visit is scored and its earlier visits
trained the model. For every site of a finished run, each video is scored by the site's final
model (the subject's reference p when the model has a personality branch), and per subject:

- ``residual``: prediction - target on the scored visit (normalised score);
- ``bias``: the mean residual over the subject's training visits (in-sample: the model was fitted
  to them, so this underestimates the bias an unseen visit would show).

Reported per run and site: ``rmse`` (the scored visits), ``rmse_without_bias`` (each residual
minus its subject's bias: what a site that knew each person's past errors could reach),
``bias_rmse`` and ``bias_residual_correlation``. A large drop from ``rmse`` to
``rmse_without_bias`` means the error is mostly a stable per-person offset - exactly what the
personality branch is meant to remove - rather than per-visit noise.

    python benchmarks/personal_bias.py RUN_DIR [RUN_DIR ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

if not __package__:  # run as a script: the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.personality_use import run_locations, site_videos  # noqa: E402
from mpdrm.inference.model import SiteModel, load_model_dir  # noqa: E402


def visit_residuals(model: SiteModel, site_folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Subject -> ``[(visit, prediction - target), ...]`` over the site's manifest."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry, clips in site_videos(model, site_folder):
        known = entry["subject"] if model.has_personality and entry["subject"] in model.subjects() else None
        prediction = float(np.mean(model.score_clips(clips, subject=known).prediction))
        out[entry["subject"]].append((int(entry["visit"]), prediction - float(entry["score"]) / model.score_max))
    return out


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
    sites, pooled_scored, pooled_bias = {}, [], []
    for state in sorted(p for p in state_root.iterdir() if (p / "model").is_dir()):
        scored, biases = split_bias(visit_residuals(load_model_dir(state / "model"), cohort / state.name))
        sites[state.name] = figures(scored, biases)
        pooled_scored.append(scored)
        pooled_bias.append(biases)
    if not sites:
        raise SystemExit(f"{run_dir}: no site model under {state_root}")
    return {"run": str(run_dir), "sites": sites,
            "overall": figures(np.concatenate(pooled_scored), np.concatenate(pooled_bias))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the reports here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reports = []
    for run_dir in args.run_dirs:
        reports.append(run_report(run_dir))
        overall = reports[-1]["overall"]
        print(run_dir.name, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in overall.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
