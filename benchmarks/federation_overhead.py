"""Federation overhead: the federated run's wall time over the centralized run's for the same
example-steps, engine start-up apart, and the training loop's throughput inside the run over
the same model's isolated training step.

Per seed, one pair of real runs (:mod:`benchmarks.paired_runs`: ``mpdrm-simulate`` with
``strategy=mpdrm`` and with ``strategy=centralized``, the same job otherwise). From each
``summary.json``:

- ``wall``: the ServerApp's (centralized: the training loop's) clock at the end of the run;
  ``startup``: the simulation engine's life outside it (``engine_seconds - wall_seconds``:
  Ray and the ServerApp start, shut-down); ``process``: ``mpdrm-simulate`` as a user waits
  for it (cohort preparation included);
- ``loop_seconds``: the seconds the training loops ran (federated: summed over sites and
  rounds; sites train one after the other with the default ``resources.client_cpus=2``);
  ``train_stage_seconds``: the sites' whole training handlers (the loop plus opening the
  session: model, data, saved state; and saving the state); ``other_seconds = wall -
  loop_seconds``: everything else (evaluation, per-message set-up, aggregation, checkpoints);
- ``clips_per_second``: clips trained over ``loop_seconds`` (the loops' own rate), and
  ``run_clips_per_second``: the same clips over the whole ``wall``;
- the final RMSE of each and their ratio (the learning issue's target: federated /
  centralized <= 1.15 at the end of the default run), with the cohort's references.

The isolated step (``isolated``) is timed in this process after the runs, with the runs' own
model, batch size, loss and optimizer on random clips of the run's shape, on as many threads
as a site's ClientApp gets (``resources.client_cpus``). ``in_run_over_isolated`` is the
training loop's clips/s over it (the issue's target: >= 0.9); ``run_over_isolated`` is the
whole run's.

    python benchmarks/federation_overhead.py            # the default job, seeds 0 1 2
    python benchmarks/federation_overhead.py --quick    # 2 small sites, 2 rounds, seed 0

Runs finished earlier under ``--work`` are reused (the time-to-accuracy study reads the same
runs). Prints a table, writes ``--out`` (JSON) and a markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paired_runs import Pair, pair_arguments, pair_settings, pairs, train_clip_steps  # noqa: E402
from benchmarks.report import cpu_model, write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "results" / "paired_runs"
DEFAULT_OUT = HERE / "results" / "federation_overhead.json"
RMSE_TARGET = 1.15  # federated / centralized final RMSE (learning issue)
THROUGHPUT_TARGET = 0.9  # in-run / isolated training clips per second (speed issue)


def site_rounds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every training reply's metrics (centralized: each round's one training block)."""
    return [site for entry in summary["rounds"]
            for site in ((entry["train"].get("per_site") or {}).values() or [entry["train"]])]


def loop_figures(summary: dict[str, Any]) -> tuple[float, float, float]:
    """``(clips, loop seconds, stage seconds)`` of the run's training.

    The loop's clips/s is each reply's ``train-examples_per_second``; a site's
    ``train-seconds`` is its whole training handler (session, model and data, state saved),
    so its loop seconds are ``train-steps x batch / clips/s``; the centralized loop reports
    only the loop (``train-seconds``), so there stage = loop.
    """
    batch = int(summary["config"]["data.batch_size"])
    clips = loop = stage = 0.0
    for site in site_rounds(summary):
        rate, seconds = float(site["train-examples_per_second"]), float(site["train-seconds"])
        seen = float(site["train-steps"]) * batch if "train-steps" in site else rate * seconds
        clips, loop, stage = clips + seen, loop + seen / rate, stage + seconds
    return clips, loop, stage


def run_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The timing and accuracy figures of one run."""
    wall, steps = float(summary["wall_seconds"]), train_clip_steps(summary)
    clips, loop, stage = loop_figures(summary)
    walls = [float(summary["initial"]["wall_seconds"])] + [float(r["wall_seconds"]) for r in summary["rounds"]]
    return {
        "wall": wall, "startup": float(summary["engine_seconds"]) - wall, "process": float(summary["process_seconds"]),
        "seconds_per_round": statistics.median(b - a for a, b in zip(walls, walls[1:])),
        "initial_eval_seconds": walls[0], "clip_steps": steps, "loop_seconds": loop, "train_stage_seconds": stage,
        "other_seconds": wall - loop, "clips_per_second": clips / loop, "run_clips_per_second": clips / wall,
        "rmse": float(summary["final"]["rmse"]), "reference": summary.get("reference"),
    }


def pair_row(pair: Pair) -> dict[str, Any]:
    """The figures of one seed: both runs and their ratios."""
    fed, cen = run_figures(pair.federated), run_figures(pair.centralized)
    if fed["clip_steps"] != cen["clip_steps"]:
        raise ValueError(f"seed {pair.seed}: {fed['clip_steps']} federated clip-steps against "
                         f"{cen['clip_steps']} centralized: not the same work")
    return {"seed": pair.seed, "federated": fed, "centralized": cen,
            "wall_ratio": fed["wall"] / cen["wall"], "process_ratio": fed["process"] / cen["process"],
            "loop_seconds_ratio": fed["loop_seconds"] / cen["loop_seconds"],
            "rmse_ratio": fed["rmse"] / cen["rmse"]}


def isolated_clips_per_second(run_config: dict[str, Any], threads: int, warmup: int = 5, timed: int = 20) -> dict[str, Any]:
    """The run's model trained alone on random clips: median step time and clips/s.

    As in the run's training loop (:func:`mpdrm.training.train_local`), freed memory is kept
    (``train.keep_freed_memory``, process-wide) before the first step.
    """
    from mpdrm.allocator import keep_freed_memory
    from mpdrm.contract.runconfig import build
    from mpdrm.contract.sharing import build_site_model
    from mpdrm.losses import MPDRMLoss
    from mpdrm.training import TrainConfig
    from mpdrm.training_engine import default_step, make_optimizer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        batch_size, pk_p = int(run_config["data.batch_size"]), max(1, int(run_config["data.pk_p"]))
        model = build_site_model(run_config, num_subjects=pk_p)
        cfg = build(TrainConfig, run_config, "train")
        if cfg.keep_freed_memory:
            keep_freed_memory()
        shape = (model.config.in_channels, model.config.frames, model.config.image_size, model.config.image_size)
        batch = {"clips": torch.randn(batch_size, *shape), "target": torch.rand(batch_size),
                 "subject": torch.arange(batch_size) % pk_p, "visit": torch.zeros(batch_size, dtype=torch.long),
                 "video": torch.arange(batch_size)}
        optimizer, loss_fn = make_optimizer(model, cfg), MPDRMLoss.from_configs(model.config, cfg)
        model.train()
        times = []
        for i in range(warmup + timed):
            start = time.perf_counter()
            default_step(model, batch, optimizer, loss_fn, cfg.grad_clip)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    step = statistics.median(times)
    return {"batch": batch_size, "threads": threads, "step_seconds": step, "clips_per_second": batch_size / step,
            "input": list(shape)}


def client_threads(work: Path, seed: int) -> int:
    """The threads a site's ClientApp trains on: the federated run's ``resources.client_cpus``."""
    spec = json.loads((work / f"mpdrm-s{seed}" / "simulation_spec.json").read_text())
    return max(1, int(float(spec["resources"].get("client_cpus", 2))))


def summarise(rows: list[dict[str, Any]], isolated: dict[str, Any]) -> dict[str, Any]:
    """Mean and sd over seeds of the ratios, and the throughput ratios against ``isolated``."""
    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    iso = isolated["clips_per_second"]
    out = {key: stat([r[key] for r in rows]) for key in ("wall_ratio", "process_ratio", "loop_seconds_ratio", "rmse_ratio")}
    for side in ("federated", "centralized"):
        out[side] = {key: stat([r[side][key] for r in rows])
                     for key in ("wall", "startup", "process", "seconds_per_round", "loop_seconds", "train_stage_seconds",
                                   "other_seconds", "rmse")}
        out[side]["in_run_over_isolated"] = stat([r[side]["clips_per_second"] / iso for r in rows])
        out[side]["run_over_isolated"] = stat([r[side]["run_clips_per_second"] / iso for r in rows])
    out["verdicts"] = {
        "rmse_ratio<=1.15": out["rmse_ratio"]["mean"] <= RMSE_TARGET,
        "in_run_over_isolated>=0.9": out["federated"]["in_run_over_isolated"]["mean"] >= THROUGHPUT_TARGET,
    }
    return out


def table(rows: list[dict[str, Any]], isolated: dict[str, Any], summary: dict[str, Any]) -> str:
    """A markdown table: one line per seed and side, then the means."""
    iso = isolated["clips_per_second"]
    lines = ["| seed | run | wall s | start-up s | s/round | loop s | train stage s | other s | loop clips/s "
             "| loop/isolated | run/isolated | RMSE |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for side in ("federated", "centralized"):
            f = r[side]
            lines.append(f"| {r['seed']} | {side} | {f['wall']:.1f} | {f['startup']:.1f} | {f['seconds_per_round']:.1f} "
                         f"| {f['loop_seconds']:.1f} | {f['train_stage_seconds']:.1f} | {f['other_seconds']:.1f} | {f['clips_per_second']:.1f} "
                         f"| {f['clips_per_second'] / iso:.2f} | {f['run_clips_per_second'] / iso:.2f} | {f['rmse']:.3f} |")
    s = summary
    lines += ["", f"Isolated training step (batch {isolated['batch']}, {isolated['threads']} threads): "
              f"{iso:.1f} clips/s.",
              f"Federated / centralized, mean ± sd over {len(rows)} seeds: wall {s['wall_ratio']['mean']:.2f} ± "
              f"{s['wall_ratio']['sd']:.2f}, training loops {s['loop_seconds_ratio']['mean']:.2f} ± "
              f"{s['loop_seconds_ratio']['sd']:.2f}, final RMSE {s['rmse_ratio']['mean']:.2f} ± "
              f"{s['rmse_ratio']['sd']:.2f} (target <= {RMSE_TARGET})."]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` runs the small job on one seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pair_arguments(parser, DEFAULT_WORK, DEFAULT_OUT)
    args = pair_settings(parser.parse_args(argv), DEFAULT_WORK, DEFAULT_OUT)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the pairs, time the isolated step, print and write the report."""
    args = parse(argv)
    started = time.perf_counter()
    done = pairs(args.job, args.seeds, args.work, args.cache)
    rows = [pair_row(p) for p in done]
    isolated = isolated_clips_per_second(done[0].federated["config"], client_threads(args.work, done[0].seed))
    summary = summarise(rows, isolated)
    text = table(rows, isolated, summary)
    print(text)
    report = {"benchmark": "federation_overhead", "cpu": cpu_model(), "job": list(args.job), "seeds": args.seeds,
              "rows": rows, "isolated": isolated, "summary": summary, "wall_seconds": time.perf_counter() - started}
    write_report(args.out, report)
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
