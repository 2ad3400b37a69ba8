"""Step time with and without ``mpdrm.allocator.keep_freed_memory`` (plain and DP-SGD).

The setting is process-wide and cannot be undone, so the two sides run in separate child
processes, alternated (off, on, off, on, ...) so that load on a shared machine hits both
alike. Each child times plain and DP (``grouped``) steps interleaved, as
``benchmarks/dp_overhead.py`` does, and counts minor page faults per step.

    python benchmarks/allocator.py [--sizes tiny base] [--repeats 2] [--steps 6] [--batch 8]

Prints a table and writes benchmarks/results/allocator.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from report import write_report  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"


def child(size: str, keep: bool, batch: int, steps: int) -> dict[str, Any]:
    """One side: optionally keep freed memory, then time plain and DP steps."""
    from dp_overhead import bench_size  # benchmarks/ is on sys.path when run as a script

    from mpdrm.allocator import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    res = bench_size(size, ["grouped"], batch, steps, warmup=2, seed=0)
    return {"applied": applied, "plain_s": res["plain_s"], "dp_s": res["grouped_s"],
            "plain_faults": res["plain_faults"], "dp_faults": res["grouped_faults"]}


def run_child(size: str, keep: bool, batch: int, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", size, "--keep", str(int(keep)),
           "--batch", str(batch), "--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--repeats", type=int, default=2, help="child processes per side")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per child and side")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "allocator.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, bool(args.keep), args.batch, args.steps)))
        return {}

    report: dict[str, Any] = {"benchmark": "allocator", "batch": args.batch, "steps": args.steps,
                              "repeats": args.repeats, "threads": 1, "sizes": {}}
    print(f"{'size':6} {'side':5} {'plain s/step':>13} {'DP s/step':>10} {'DP/plain':>9} "
          f"{'plain faults/step':>18} {'DP faults/step':>15}")
    for size in args.sizes:
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for _ in range(args.repeats):
            for side in ("off", "on"):
                runs[side].append(run_child(size, side == "on", args.batch, args.steps))
        summary = {}
        for side, results in runs.items():
            plain = statistics.median(r["plain_s"] for r in results)
            dp = statistics.median(r["dp_s"] for r in results)
            plain_faults = statistics.median(r["plain_faults"] for r in results)
            dp_faults = statistics.median(r["dp_faults"] for r in results)
            summary[side] = {"plain_s": plain, "dp_s": dp, "dp_ratio": dp / plain,
                             "plain_faults": plain_faults, "dp_faults": dp_faults, "runs": results}
            print(f"{size:6} {side:5} {plain:13.3f} {dp:10.3f} {dp / plain:9.2f} "
                  f"{plain_faults:18.0f} {dp_faults:15.0f}", flush=True)
        summary["plain_speedup"] = summary["off"]["plain_s"] / summary["on"]["plain_s"]
        summary["dp_speedup"] = summary["off"]["dp_s"] / summary["on"]["dp_s"]
        print(f"{size:6} on/off: plain {summary['plain_speedup']:.2f}x faster, DP {summary['dp_speedup']:.2f}x faster")
        report["sizes"][size] = summary
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
