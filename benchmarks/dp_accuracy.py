"""Accuracy cost of client-side DP (dp=opacus) on the synthetic cohort: epsilon 1, 4, 8 vs no DP.

Every setting is a real federated run (``mpdrm-simulate``: Flower simulation, MPDRM mode)
over one generated cohort, repeated over seeds; the final video-level metrics of the
personalised model on held-out subjects are compared. The defaults are the scale of the
default ``mpdrm-simulate`` run (3 sites x 8 subjects x 3 visits x 8 s, tiny, 6 rounds, 2 local
epochs), where training without DP clearly learns. Prints a table and writes
``benchmarks/results/dp_accuracy.json``; a finished run (its summary.json) is reused when the
benchmark is started again, so an interrupted benchmark continues where it stopped.

    python benchmarks/dp_accuracy.py                                  # about an hour on 2 cores
    python benchmarks/dp_accuracy.py --dp-extra train.freeze=... --dp-batch-size 32
    python benchmarks/dp_accuracy.py --sites 2 --subjects 4 --rounds 2 --seeds 0   # a quick look
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import write_report  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("rmse", "mae", "ccc", "pcc")


def run_setting(cohort: Path, out: Path, *, epsilon: float | None, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One federated run; returns its summary.json."""
    run_dir = out / f"eps-{epsilon if epsilon is not None else 'none'}-seed-{seed}"
    summary_file, args_file = run_dir / "summary.json", run_dir / "benchmark_args.json"
    if summary_file.is_file() and args_file.is_file() and args_file.read_text() == _run_args(args, epsilon):
        summary = json.loads(summary_file.read_text())
        if summary.get("final"):
            return summary
    overrides = [
        f"cohort={cohort}", f"run_dir={run_dir}", f"rounds={args.rounds}", f"seed={seed}",
        f"model.image_size={args.image_size}", f"train.epochs={args.epochs}",
        "resources.client_cpus=1", *args.extra,
    ]
    if args.max_clips is not None:
        overrides.append(f"prepare.max_clips={args.max_clips}")
    if epsilon is None:
        overrides += [f"data.batch_size={args.batch_size}", f"train.lr={args.lr}"]
    else:
        overrides += ["dp=opacus", f"dp.target_epsilon={epsilon}", f"dp.max_grad_norm={args.max_grad_norm}",
                      f"data.batch_size={args.dp_batch_size or args.batch_size}",
                      f"train.lr={args.dp_lr or args.lr}", *args.dp_extra]
    done = subprocess.run([sys.executable, "-m", "simulations.simulate", *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {run_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    args_file.write_text(_run_args(args, epsilon))
    return json.loads(summary_file.read_text())


def _run_args(args: argparse.Namespace, epsilon: float | None) -> str:
    """What decides one run's result besides its seed (to tell a reusable run folder)."""
    keys = ["rounds", "epochs", "image_size", "max_clips", "extra", "sites", "subjects", "visits", "seconds"]
    keys += ["batch_size", "lr"] if epsilon is None else ["dp_batch_size", "batch_size", "dp_lr", "lr",
                                                          "max_grad_norm", "dp_extra"]
    return json.dumps({k: getattr(args, k) for k in keys} | {"epsilon": epsilon}, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--visits", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-clips", type=int, default=None, help="clips per video (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size without DP")
    parser.add_argument("--dp-batch-size", type=int, default=None, help="expected Poisson batch under DP")
    parser.add_argument("--dp-lr", type=float, default=None, help="learning rate under DP (default: --lr)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides for every run")
    parser.add_argument("--dp-extra", nargs="*", default=[], help="Hydra overrides for the DP runs only")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "dp_accuracy_runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dp_accuracy.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from mpdrm.data.synth import generate_cohort

    args.work.mkdir(parents=True, exist_ok=True)
    cohort = args.work / "cohort"
    if not (cohort / "cohort.json").is_file():
        generate_cohort(cohort, sites=args.sites, subjects=args.subjects, visits=args.visits,
                        seconds=args.seconds, seed=0, workers=1)
    started = time.perf_counter()
    settings: list[float | None] = [None, *args.epsilons]
    results: dict[str, Any] = {}
    for epsilon in settings:
        key = "none" if epsilon is None else f"{epsilon:g}"
        runs = []
        for seed in args.seeds:
            summary = run_setting(cohort, args.work, epsilon=epsilon, seed=seed, args=args)
            final = summary["final"] or {}
            dp = summary.get("dp") or {}
            runs.append({"seed": seed, **{m: final.get(m) for m in METRICS},
                         "epsilon": max((v["epsilon"] for v in dp.values()), default=None),
                         "noise_multiplier": max((v["noise_multiplier"] for v in dp.values()), default=None),
                         "wall_seconds": summary.get("wall_seconds")})
            print(f"epsilon {key:>4} seed {seed}: " + " ".join(f"{m} {runs[-1][m]}" for m in METRICS), flush=True)
        stats = {}
        for m in METRICS:
            values = [r[m] for r in runs if isinstance(r[m], (int, float))]
            stats[m] = {"mean": statistics.fmean(values) if values else None,
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        results[key] = {"runs": runs, "stats": stats}

    base = results["none"]["stats"]
    lines = [f"{'epsilon':>8} | " + " | ".join(f"{m:>15}" for m in METRICS) + " | rmse cost vs no DP"]
    for key, value in results.items():
        cells = [f"{value['stats'][m]['mean']:.4f}±{value['stats'][m]['std']:.4f}" if value["stats"][m]["mean"] is not None
                 else "n/a" for m in METRICS]
        cost = value["stats"]["rmse"]["mean"] - base["rmse"]["mean"] if base["rmse"]["mean"] is not None else float("nan")
        lines.append(f"{key:>8} | " + " | ".join(f"{c:>15}" for c in cells) + f" | {cost:+.4f}")
    table = "\n".join(lines)
    print(table)
    report = {"benchmark": "dp_accuracy", "scale": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "metrics_units": "normalised score (score / scale maximum), video level, held-out subjects",
              "results": results, "table": table, "wall_seconds": time.perf_counter() - started}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
