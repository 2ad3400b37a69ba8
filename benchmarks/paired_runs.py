"""Federated and centralized runs of one job, side by side: what the federation and the
time-to-accuracy studies read.

A *pair* is one ``mpdrm-simulate`` run with ``strategy=mpdrm`` and one with
``strategy=centralized`` on the same cohort, seed, model and schedule: the centralized run
pools every site's training clips and trains ``rounds x train.epochs`` epochs, so both see
the same example-steps. Runs of one seed are started one after the other (federated, then
centralized), so the two share the machine's state as closely as one machine allows. A run
that finished earlier with the same overrides is reused (``bench_overrides.json`` beside its
``summary.json``); a run that did not finish is started again.

    FULL: the README's main job (``./dev simulate``'s defaults), seeds 0, 1, 2
    QUICK: 2 sites x 4 subjects x 3 visits x 4 s, 32 px, 2 rounds, 1 epoch, seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STRATEGIES = ("mpdrm", "centralized")
FULL: tuple[str, ...] = ()
QUICK: tuple[str, ...] = ("sites=2", "data.synth.subjects=4", "data.synth.visits=3", "data.synth.seconds=4.0",
                          "model.image_size=32", "rounds=2", "train.epochs=1")


@dataclass(frozen=True)
class Pair:
    """The finished federated and centralized runs of one seed."""

    seed: int
    federated: dict[str, Any]
    centralized: dict[str, Any]


def overrides(job: tuple[str, ...], strategy: str, seed: int, run_dir: Path) -> list[str]:
    """The Hydra overrides of one run of the pair."""
    return [*job, f"strategy={strategy}", f"seed={seed}", f"run_dir={run_dir}"]


def finished(run_dir: Path, wanted: list[str]) -> bool:
    """Whether ``run_dir`` holds a finished run made with exactly ``wanted``."""
    settings = run_dir / "bench_overrides.json"
    return ((run_dir / "summary.json").is_file() and settings.is_file()
            and json.loads(settings.read_text()) == wanted)


def run(job: tuple[str, ...], strategy: str, seed: int, work: Path, cache: Path) -> dict[str, Any]:
    """The summary of one finished run, started unless it finished earlier."""
    run_dir = work / f"{strategy}-s{seed}"
    wanted = overrides(job, strategy, seed, run_dir)
    if not finished(run_dir, wanted):
        (run_dir / "bench_overrides.json").unlink(missing_ok=True)
        env = {**os.environ, "FEDMPDRM_CACHE": str(cache)}
        print(f"[paired_runs] {strategy} seed {seed} -> {run_dir}", flush=True)
        done = subprocess.run([sys.executable, "-m", "simulations.simulate", *wanted, "resume=false"], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"run {run_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        (run_dir / "bench_overrides.json").write_text(json.dumps(wanted))
    return json.loads((run_dir / "summary.json").read_text())


def pairs(job: tuple[str, ...], seeds: list[int], work: Path, cache: Path | None = None) -> list[Pair]:
    """One finished :class:`Pair` per seed (runs under ``work``, cohorts cached in ``cache``)."""
    cache = cache or work / "cache"
    return [Pair(seed, *(run(job, s, seed, work, cache) for s in STRATEGIES)) for seed in seeds]


def train_clip_steps(summary: dict[str, Any]) -> int:
    """Clips trained over the run: every round's training examples times the local epochs."""
    epochs = int(summary["config"].get("train.epochs", 1))
    return sum(int(r["train"].get("num-examples", 0)) * epochs for r in summary["rounds"])


def round_clock(summary: dict[str, Any]) -> list[tuple[int, float, float]]:
    """``(round, wall seconds at its end, RMSE)`` from the initial evaluation (round 0) on."""
    rows = [(0, float(summary["initial"]["wall_seconds"]), float(summary["initial"]["eval"]["rmse"]))]
    return rows + [(int(r["round"]), float(r["wall_seconds"]), float(r["eval"]["rmse"])) for r in summary["rounds"]]


def pair_arguments(parser: argparse.ArgumentParser, default_work: Path, default_out: Path) -> None:
    """The options of a study over the pairs: ``--quick``, ``--seeds``, ``--work``, ``--cache``, ``--out``."""
    parser.add_argument("--quick", action="store_true", help="2 small sites, 32 px, 2 rounds, seed 0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=default_work)
    parser.add_argument("--cache", type=Path, default=None, help="generated cohorts (default WORK/cache)")
    parser.add_argument("--out", type=Path, default=default_out)


def pair_settings(args: argparse.Namespace, default_work: Path, default_out: Path) -> argparse.Namespace:
    """``args`` with ``job`` set (``QUICK`` or ``FULL``); ``--quick`` runs seed 0 only, in its own folders."""
    from benchmarks.report import quick_paths

    args.job = QUICK if args.quick else FULL
    if args.quick:
        args.seeds = [0]
    quick_paths(args, default_work, default_out)
    return args
