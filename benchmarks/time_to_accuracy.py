"""Time to accuracy: the wall time until a run first reaches a stated RMSE, federated
(``strategy=mpdrm``) against ``centralized``, on the same runs as the federation-overhead study
(:mod:`benchmarks.paired_runs`; runs finished earlier under ``--work`` are reused).

Each run's ``summary.json`` records the clock when the initial evaluation and each round ended
(``wall_seconds``: the ServerApp's clock, or the centralized loop's; engine start-up is not in
it and is reported by the federation-overhead study). A run reaches the target at the first
evaluation after training (round >= 1) whose (normalised, video-level) RMSE is at or below
it; a run that never does is
reported as not reaching it, with its best RMSE. Per seed: both times, their ratio when both
reach it, and the cohort's references (oracle, habit-blind oracle, constant) on the evaluated
visits.

    python benchmarks/time_to_accuracy.py                  # default job, seeds 0 1 2, RMSE 0.20
    python benchmarks/time_to_accuracy.py --target 0.18
    python benchmarks/time_to_accuracy.py --quick          # small job, seed 0, RMSE 0.30

Prints a table, writes ``--out`` (JSON), a markdown table beside it and, with matplotlib, a
PNG of RMSE against wall time per run with the target line.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paired_runs import Pair, pair_arguments, pair_settings, pairs, round_clock  # noqa: E402
from benchmarks.report import cpu_model, write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "results" / "paired_runs"
DEFAULT_OUT = HERE / "results" / "time_to_accuracy.json"
TARGETS = {"full": 0.20, "quick": 0.30}


def first_reached(clock: list[tuple[int, float, float]], target: float) -> dict[str, Any]:
    """When a run's RMSE first was at or below ``target`` after training (round >= 1):
    ``{"round", "seconds", "rmse"}``, or ``{"round": None, "best_rmse": ...}`` when it never
    was (the untrained model's evaluation, round 0, does not count: a target it already
    meets says nothing about training)."""
    trained = [c for c in clock if c[0] >= 1]
    for round_, seconds, rmse in trained:
        if rmse <= target:
            return {"round": round_, "seconds": seconds, "rmse": rmse}
    return {"round": None, "seconds": None, "best_rmse": min(r for _, _, r in trained)}


def seed_row(pair: Pair, target: float) -> dict[str, Any]:
    """Both runs' time to ``target`` and their ratio (when both reach it)."""
    fed, cen = (first_reached(round_clock(s), target) for s in (pair.federated, pair.centralized))
    ratio = fed["seconds"] / cen["seconds"] if fed["seconds"] is not None and cen["seconds"] else None
    return {"seed": pair.seed, "federated": fed, "centralized": cen, "ratio": ratio,
            "clock": {"federated": round_clock(pair.federated), "centralized": round_clock(pair.centralized)},
            "reference": pair.federated.get("reference")}


def describe(reached: dict[str, Any]) -> str:
    """``"212.4 s (round 5)"`` or ``"not reached (best 0.231)"``."""
    if reached["round"] is None:
        return f"not reached (best {reached['best_rmse']:.3f})"
    return f"{reached['seconds']:.1f} s (round {reached['round']})"


def table(rows: list[dict[str, Any]], target: float) -> str:
    """A markdown table: one line per seed, then how many runs reached the target."""
    lines = [f"Time until the RMSE is first <= {target} (ServerApp / training-loop clock):", "",
             "| seed | federated | centralized | ratio | oracle | habit-blind | constant |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = r["reference"] or {}
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {r['seed']} | {describe(r['federated'])} | {describe(r['centralized'])} | {ratio} | "
                     + " | ".join(f"{ref[k]['rmse']:.3f}" if k in ref else "-" for k in ("oracle", "habit_blind", "constant"))
                     + " |")
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    if ratios:
        sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        lines += ["", f"Federated over centralized time, mean ± sd over the {len(ratios)} seeds where both reached it: "
                      f"{statistics.fmean(ratios):.2f} ± {sd:.2f}."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], target: float, path: Path) -> Path | None:
    """RMSE against wall time, one line per run, the target dashed; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        for side, style in (("federated", "-"), ("centralized", "--")):
            clock = r["clock"][side]
            ax.plot([c[1] for c in clock], [c[2] for c in clock], style, marker="o", label=f"{side} seed {r['seed']}")
    ax.axhline(target, color="k", linestyle=":", label=f"target {target}")
    ax.set_xlabel("wall seconds (ServerApp / training-loop clock)")
    ax.set_ylabel("RMSE (normalised)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` runs the small job on one seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pair_arguments(parser, DEFAULT_WORK, DEFAULT_OUT)
    parser.add_argument("--target", type=float, default=None, help="RMSE (normalised); default 0.20 (quick: 0.30)")
    args = pair_settings(parser.parse_args(argv), DEFAULT_WORK, DEFAULT_OUT)
    args.target = args.target if args.target is not None else TARGETS["quick" if args.quick else "full"]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the pairs, print and write the report."""
    args = parse(argv)
    started = time.perf_counter()
    rows = [seed_row(p, args.target) for p in pairs(args.job, args.seeds, args.work, args.cache)]
    text = table(rows, args.target)
    print(text)
    png = plot(rows, args.target, args.out.with_suffix(".png"))
    write_report(args.out, {"benchmark": "time_to_accuracy", "cpu": cpu_model(), "job": list(args.job),
                            "target_rmse": args.target, "seeds": args.seeds, "rows": rows,
                            "plot": str(png) if png else None, "wall_seconds": time.perf_counter() - started})
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
