"""Communication: array bytes up and down per site per round, ``mpdrm`` against ``fedavg_full``,
against the size of the shared parameters (the floor).

Every run is a real federated run (``mpdrm-simulate``: Flower simulation) on one small generated
cohort. What a round carries depends on the model and on what the strategy sends, not on how
long a site trains, so the cohort and schedule are the smallest that run. ``summary.json``
counts the arrays of every message (Flower's ``ArrayRecord.count_bytes()``: tensor bytes plus
each array's ``.npy`` header and name; ``strategies.traffic``); the floor is the same count of
the shared arrays of the run's seeded initial model (``server.app.initial_model``), i.e. one
copy of MPDRM's shared parameters. Per site and round: each stage's bytes over the sites that
took part in it, averaged over the rounds.

    python benchmarks/communication.py              # tiny and base, 3 sites, 2 rounds
    python benchmarks/communication.py --quick      # tiny, 2 sites, 1 round, 32 px

Finished runs (their summary.json, same settings) under ``--work`` are reused. Prints a table
and writes ``benchmarks/results/communication.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAGES = ("down_train", "up_train", "down_evaluate", "up_evaluate")
DEFAULT_WORK = HERE / "results" / "communication_runs"
DEFAULT_OUT = HERE / "results" / "communication.json"


def overrides(args: argparse.Namespace, size: str, strategy: str, run_dir: Path) -> list[str]:
    """The Hydra overrides of one run."""
    return [f"model={size}", f"strategy={strategy}", f"sites={args.sites}", f"rounds={args.rounds}",
            f"data.synth.subjects={args.subjects}", "data.synth.visits=3", "data.synth.seconds=3.0",
            "train.epochs=1", f"model.image_size={args.image_size}", "prepare.max_clips=2",
            "resources.client_cpus=1", f"seed={args.seed}", f"run_dir={run_dir}"]


def run(args: argparse.Namespace, size: str, strategy: str) -> Path:
    """The folder of one finished run, reused when it finished earlier with the same overrides."""
    run_dir = args.work / f"{size}-{strategy}"
    wanted = overrides(args, size, strategy, run_dir)
    settings = run_dir / "bench_overrides.json"
    if (run_dir / "summary.json").is_file() and settings.is_file() and json.loads(settings.read_text()) == wanted:
        return run_dir
    env = {**os.environ, "FEDMPDRM_CACHE": str(args.work / "cache")}
    done = subprocess.run([sys.executable, "-m", "simulations.simulate", *wanted], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {run_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    settings.write_text(json.dumps(wanted))
    return run_dir


def per_site(summary: dict[str, Any]) -> dict[str, float]:
    """Mean array bytes per site and round of each stage, and ``down`` / ``up`` (train + evaluate).

    A stage's bytes are divided by the sites that took part in it that round (``train`` /
    ``eval`` ``per_site``; every site of the run when a round does not list them).
    """
    sites = len(summary.get("sites") or {}) or 1
    means = {}
    for stage in STAGES:
        part = "train" if stage.endswith("train") else "eval"
        means[stage] = statistics.fmean(
            r["bytes"][stage] / (len((r.get(part) or {}).get("per_site") or {}) or sites) for r in summary["rounds"])
    means["down"] = means["down_train"] + means["down_evaluate"]
    means["up"] = means["up_train"] + means["up_evaluate"]
    return means


def floor(run_dir: Path) -> dict[str, int]:
    """One copy of the run's shared arrays: Flower's count and the raw tensor bytes."""
    from server.app import initial_model

    _, _, arrays = initial_model(json.loads((run_dir / "run_config.json").read_text()))
    return {"count_bytes": arrays.count_bytes(), "tensor_bytes": sum(a.numpy().nbytes for a in arrays.values()),
            "arrays": len(arrays)}


def row(size: str, strategy: str, run_dir: Path, mpdrm_floor: int) -> dict[str, Any]:
    """The figures of one run, with its bytes over MPDRM's floor."""
    summary = json.loads((run_dir / "summary.json").read_text())
    bytes_ = per_site(summary)
    return {"size": size, "strategy": strategy, "rounds": len(summary["rounds"]), "sites": len(summary["sites"]),
            "per_site_round": bytes_, "shared": floor(run_dir), "mpdrm_floor": mpdrm_floor,
            "down_over_floor": bytes_["down"] / mpdrm_floor, "up_over_floor": bytes_["up"] / mpdrm_floor,
            "wall_seconds": summary.get("wall_seconds")}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` shrinks the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny only, 2 sites, 1 round, 32 px")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--strategies", nargs="+", default=["mpdrm", "fedavg_full"])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.sites, args.rounds, args.image_size = ["tiny"], 2, 1, 32
        args.work = args.work.with_name(args.work.name + "-quick") if args.work == DEFAULT_WORK else args.work
        args.out = args.out.with_name(args.out.stem + "-quick.json") if args.out == DEFAULT_OUT else args.out
    args.work = args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every size x strategy, print the table, write the report."""
    args = parse(argv)
    sys.path.insert(0, str(HERE))
    from report import write_report  # noqa: PLC0415  (benchmarks/ is the script's folder)

    started, rows = time.perf_counter(), []
    for size in args.sizes:
        dirs = {s: run(args, size, s) for s in args.strategies}
        mpdrm_floor = floor(run(args, size, "mpdrm"))["count_bytes"]
        rows += [row(size, s, d, mpdrm_floor) for s, d in dirs.items()]
    print(f"{'size':6} {'strategy':12} {'down/site/round':>16} {'up/site/round':>14} {'down/floor':>11} "
          f"{'up/floor':>9}  (floor: MPDRM's shared arrays)")
    for r in rows:
        b = r["per_site_round"]
        print(f"{r['size']:6} {r['strategy']:12} {b['down']:16,.0f} {b['up']:14,.0f} {r['down_over_floor']:11.2f} "
              f"{r['up_over_floor']:9.2f}")
    write_report(args.out, {"benchmark": "communication", "args": {k: str(v) for k, v in vars(args).items()},
                            "unit": "Flower ArrayRecord.count_bytes() (tensor bytes + .npy header + name per array)",
                            "rows": rows, "wall_seconds": time.perf_counter() - started})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
