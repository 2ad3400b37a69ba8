"""What site calibration (``eval.calibration=offset``) changes in a finished run's final evaluation.

Calibration acts at evaluation only (no weight, no training step changes), so a run finished
before it existed can be scored both ways from what it left: for every site, the final model
the site kept (``STATE_DIR/model``, the network without any offset) is evaluated on the site's
scored visits exactly as ``client.handlers.handle_evaluate`` does (``mpdrm.training.evaluate``
with the run's personality source), once as it is and once with the offset the site fits on
its training videos (``mpdrm.contract.site_data.calibration_offset``). The overall figure is the
run's own: per-site RMSE averaged with the sites' scored clips as weights.

    python benchmarks/calibration_effect.py RUN_DIR [RUN_DIR ...] [--out FILE]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as a script: the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_probe import probe_main  # noqa: E402
from mpdrm.contract.runconfig import merged  # noqa: E402
from mpdrm.contract.site_data import calibration_offset, eval_loader, personality_source, site_data  # noqa: E402
from mpdrm.inference.model import load_model_dir  # noqa: E402
from mpdrm.training import evaluate  # noqa: E402


def site_figures(model: torch.nn.Module, data: Any, cfg: dict[str, Any]) -> dict[str, float]:
    """RMSE and mean error of one site's scored visits without and with its offset."""
    offset = calibration_offset(model, data, {**cfg, "eval.calibration": "offset"})
    source = personality_source(data, cfg)
    plain = evaluate(model, eval_loader(data.test, cfg), task="regression", **source)
    calibrated = evaluate(model, eval_loader(data.test, cfg), task="regression", offset=offset or 0.0, **source)
    return {"clips": len(data.test), "offset": float(offset or 0.0), "rmse": plain["rmse"],
            "mean_error": plain["mean_error"], "rmse_calibrated": calibrated["rmse"],
            "mean_error_calibrated": calibrated["mean_error"]}


def run_report(run_dir: Path) -> dict[str, Any]:
    """Per site and overall (clip-weighted like the run's summary)."""
    config = json.loads((run_dir / "summary.json").read_text())["config"]  # the run's flat run config
    state_root, cohort, cfg = Path(config["state-root"]), Path(config["cohort"]), merged(config)
    sites = {}
    for state in sorted(p for p in state_root.iterdir() if (p / "model").is_dir()):
        model = load_model_dir(state / "model").model
        sites[state.name] = site_figures(model, site_data(cohort / state.name, cfg), cfg)
    if not sites:
        raise SystemExit(f"{run_dir}: no site model under {state_root}")
    clips = sum(s["clips"] for s in sites.values())
    overall = {k: sum(s[k] * s["clips"] for s in sites.values()) / clips for k in ("rmse", "rmse_calibrated")}
    return {"run": run_dir.name, "protocol": cfg["eval.protocol"], "sites": sites, "overall": overall}


def describe(report: dict[str, Any]) -> str:
    """One line per run: overall RMSE without -> with calibration, each site's offset."""
    return (f"{report['run']}: rmse {report['overall']['rmse']:.4f} -> {report['overall']['rmse_calibrated']:.4f} | "
            + " ".join(f"{n} {s['offset']:+.3f}" for n, s in report["sites"].items()))


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__, run_report, describe, argv)


if __name__ == "__main__":
    raise SystemExit(main())
