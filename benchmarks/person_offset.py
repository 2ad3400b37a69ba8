"""Would an intake offset per person help? A probe of finished runs under the ``enrolled`` protocol.

Under ``enrolled`` a new person's first visit, with its score, enrols them at the site and their
later visits are scored. Most of the error left there is a stable per-person bias
(``subject_bias_rmse``), so the obvious use of the intake score is a **person offset**: add
``intake score - the model's score of the intake visit`` to the person's later scores (instead of
the site's offset, ``eval.calibration=offset``). This probe measures that without training:
``subjects`` and ``enrolled`` share their training split, so the final model every site kept in a
finished ``subjects`` or ``enrolled`` run (``STATE_DIR/model``) is scored on the ``enrolled``
visits three ways: no offset, the site's offset (what runs report), the person's intake offset.
Video-level errors, every scored video weighted once, pooled over the run's sites; the cohort's
references (``oracle.json``) on exactly those visits beside them.

    python benchmarks/person_offset.py RUN_DIR [RUN_DIR ...] [--out FILE]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a script: the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_probe import probe_main  # noqa: E402
from mpdrm.contract.runconfig import merged  # noqa: E402
from mpdrm.contract.site_data import (calibration_offset, eval_loader, evaluated_visits,  # noqa: E402
                                      personality_source, site_data)
from mpdrm.data.cohorts import references_on  # noqa: E402
from mpdrm.inference.model import load_model_dir  # noqa: E402
from mpdrm.metrics import video_level  # noqa: E402
from mpdrm.training import predict  # noqa: E402

WAYS = ("none", "site", "person")


def per_video(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, target, subject) per video, videos in ascending id order."""
    prediction, target = video_level(out["prediction"], out["target"], out["video"], "regression")
    _, first = np.unique(out["video"], return_index=True)
    return prediction, target, out["subject"][first]


def person_offsets(prediction: np.ndarray, target: np.ndarray, subject: np.ndarray) -> dict[int, float]:
    """Each person's ``mean over their intake videos (target - prediction)``."""
    return {int(s): float(np.mean(target[subject == s] - prediction[subject == s])) for s in np.unique(subject)}


def site_errors(model: Any, data: Any, cfg: dict[str, Any]) -> dict[str, list[float]]:
    """Signed per-video errors of one site's scored ``enrolled`` visits under each of :data:`WAYS`."""
    source = personality_source(data, cfg)
    prediction, target, subject = per_video(predict(model, eval_loader(data.test, cfg), **source))
    intake = person_offsets(*per_video(predict(model, eval_loader(data.reference, cfg), **source)))
    site = calibration_offset(model, data, {**cfg, "eval.calibration": "offset"}) or 0.0
    error = prediction - target
    return {"none": error.tolist(), "site": (error + site).tolist(),
            "person": (error + np.array([intake[int(s)] for s in subject])).tolist()}


def rmse(errors: list[float]) -> float:
    """Root mean square of signed errors."""
    return float(np.sqrt(np.mean(np.square(errors))))


def run_report(run_dir: Path) -> dict[str, Any]:
    """Per site and pooled RMSE of the ``enrolled`` visits without an offset, with the site's, with each person's."""
    config = json.loads((run_dir / "summary.json").read_text())["config"]
    if config.get("eval.protocol", "subjects") not in ("subjects", "enrolled"):
        raise SystemExit(f"{run_dir}: trained under eval.protocol={config['eval.protocol']}; the enrolled "
                         f"split needs a subjects or enrolled run")
    state_root, cohort = Path(config["state-root"]), Path(config["cohort"])
    cfg = merged({**config, "eval.protocol": "enrolled"})
    sites = {}
    for state in sorted(p for p in state_root.iterdir() if (p / "model").is_dir()):
        sites[state.name] = site_errors(load_model_dir(state / "model").model, site_data(cohort / state.name, cfg), cfg)
    if not sites:
        raise SystemExit(f"{run_dir}: no site model under {state_root}")
    pooled = {way: rmse([e for s in sites.values() for e in s[way]]) for way in WAYS}
    oracle = json.loads((cohort / "oracle.json").read_text())
    visits = evaluated_visits([cohort / name for name in sites], cfg)
    reference = {k: v["rmse"] for k, v in references_on(oracle, visits).items()}
    return {"run": run_dir.name, "seed": config.get("seed"), "overall": pooled, "reference": reference,
            "sites": {name: {way: rmse(errors[way]) for way in WAYS} for name, errors in sites.items()}}


def describe(report: dict[str, Any]) -> str:
    """One line per run: pooled RMSE under each way, then per site."""
    overall = " ".join(f"{way} {report['overall'][way]:.4f}" for way in WAYS)
    per_site = " | ".join(f"{name} site {s['site']:.3f} person {s['person']:.3f}" for name, s in report["sites"].items())
    refs = " ".join(f"{k} {v:.3f}" for k, v in report["reference"].items())
    return f"{report['run']} (seed {report['seed']}): {overall} | {per_site} | references: {refs}"


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__, run_report, describe, argv)


if __name__ == "__main__":
    raise SystemExit(main())
