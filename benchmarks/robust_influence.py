"""Bounded influence of one site (``strategy.robust``): 1 of 4 sites sends its update x100 every round.

Three settings on one small synthetic cohort of 4 sites, repeated over seeds:

- ``clean``: every site honest, ``strategy.robust`` off (the default);
- ``attacked``: site 2 of 4 replies ``global + 100 x (its reply - global)`` every round, robust off;
- ``attacked+robust``: the same attack with ``strategy.robust=median`` (bound 2 x the round's median
  update norm, the default multiplier);
- ``clean+robust`` (``--settings``, not in the default study): every site honest with
  ``strategy.robust=median`` (what the bound costs).

Every run is the real ServerApp and ClientApp code in one process (``server.app.run_server`` over
a small in-process Grid, the attack as a wrapper of one site's handler), FedAvg, ``min-sites`` = 4,
at a scale that fits the whole study in about 20 minutes on 2 cores. The final video-level RMSE
(normalised score, held-out subjects) is compared, beside the cohort's constant-predictor and
oracle references on the same visits. A run that stops early (too few valid replies) is reported
with its reason, and its last complete round's RMSE. A finished run (its summary.json, same run
config) under ``--work`` is reused, so an interrupted study continues where it stopped. Prints a
table and writes ``benchmarks/results/robust_influence.json``.

    python benchmarks/robust_influence.py                       # 3 seeds x 3 settings
    python benchmarks/robust_influence.py --seeds 0 --rounds 2  # a quick look
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np  # noqa: E402
from flwr.app import Array, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from report import write_report  # noqa: E402  # benchmarks/ is on sys.path when run as a script

from client.app import create_client_app  # noqa: E402
from mpdrm.contract.runconfig import merged, run_prepare_config  # noqa: E402
from mpdrm.contract.site_data import evaluated_visits  # noqa: E402
from mpdrm.contract.sites import cohort_sites  # noqa: E402
from mpdrm.data.cohorts import oracle_reference  # noqa: E402
from mpdrm.data.prepare import prepare_site  # noqa: E402
from mpdrm.data.synth import generate_cohort  # noqa: E402
from server.app import run_server  # noqa: E402
from server.min_sites import TooFewSites  # noqa: E402
from server.summary import read_summary  # noqa: E402

SITES = 4
ATTACKER = 2  # partition id of the malicious site (the third cohort folder)
SETTINGS: dict[str, tuple[bool, dict[str, Any]]] = {
    "clean": (False, {}),
    "attacked": (True, {}),
    "attacked+robust": (True, {"strategy.robust": "median"}),
    "clean+robust": (False, {"strategy.robust": "median"}),
}

Handler = Callable[[Message], Message]


class InProcessGrid(Grid):
    """Each node is a Python handler; every pushed instruction is answered at once."""

    def __init__(self, handlers: dict[int, Handler]) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.handlers = handlers
        self._queued: dict[str, Message] = {}

    def set_run(self, run_id: int) -> None:  # type: ignore[override]
        raise NotImplementedError

    def run(self):  # type: ignore[no-untyped-def,override]
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # type: ignore[override]
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.handlers)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self._queued[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for message_id in sorted(message_ids):
            message = self._queued.pop(message_id, None)
            if message is not None:
                answer = self.handlers[message.metadata.dst_node_id](message)
                if not answer.metadata.reply_to_message_id:
                    answer.metadata.__dict__["_reply_to_message_id"] = message_id
                replies.append(answer)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))


def scaled_update(handler: Handler, factor: float) -> Handler:
    """A site that replies ``global + factor x (its honest reply - global)`` to every training instruction."""
    def malicious(message: Message) -> Message:
        answer = handler(message)
        if message.metadata.message_type == "train" and answer.has_content():
            sent = message.content["arrays"]
            arrays = answer.content["arrays"]
            for name in list(arrays.keys()):
                glob = sent[name].numpy()
                if np.issubdtype(glob.dtype, np.floating):
                    new = glob.astype(np.float64) + factor * (arrays[name].numpy().astype(np.float64) - glob)
                    arrays[name] = Array(new.astype(glob.dtype))
        return answer
    return malicious


def make_cohort(root: Path, args: argparse.Namespace, run: dict[str, Any]) -> Path:
    """The cohort of the study, generated and prepared once under ``root``."""
    cohort = root / "cohort"
    if not (cohort / "oracle.json").is_file():
        generate_cohort(cohort, sites=SITES, subjects=args.subjects, visits=args.visits, seconds=args.seconds,
                        seed=args.cohort_seed, workers=1)
    prep = run_prepare_config(merged(run))
    for site in cohort_sites(cohort):
        prepare_site(site, prep, workers=1, progress=False)
    return cohort


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run config every setting shares (the cohort, run dir, seed and robust keys are added)."""
    return {
        "model.image_size": args.image_size, "prepare.max_clips": args.max_clips,
        "data.batch_size": 8, "data.pk_p": 4, "data.pk_k": 2, "data.eval_batch_size": 32,
        "data.test_fraction": 0.34, "data.score_max": 27.0,
        "train.epochs": args.epochs, "train.lr": args.lr,
        "num-server-rounds": args.rounds, "min-sites": SITES, "strategy.aggregation": "fedavg",
    }


def one_run(cohort: Path, out: Path, setting: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One federated run; its final RMSE, what robust flagged, and how it ended."""
    attacked, extra = SETTINGS[setting]
    run_dir = out / (f"{setting}-seed-{seed}" if args.factor == 100.0 else f"{setting}-x{args.factor:g}-seed-{seed}")
    cfg = {**base_config(args), **extra, "cohort": str(cohort), "run-dir": str(run_dir / "run"),
           "state-root": str(run_dir / "state"), "seed": seed}
    summary = finished(run_dir / "run", cfg, args.rounds)
    if summary is not None:  # an earlier start of the benchmark did this run
        return result_of(summary, setting, seed, cohort, summary.get("wall_seconds"))
    client = create_client_app(cfg)
    handlers: dict[int, Handler] = {}
    for i in range(SITES):
        ctx = Context(run_id=1, node_id=100 + i, node_config={"partition-id": i, "num-partitions": SITES},
                      state=RecordDict(), run_config={})
        handler: Handler = (lambda c: (lambda message: client(message, c)))(ctx)
        handlers[100 + i] = scaled_update(handler, args.factor) if attacked and i == ATTACKER else handler
    started = time.perf_counter()
    try:
        summary = run_server(InProcessGrid(handlers), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                                              run_config={}), cfg)
    except TooFewSites:
        summary = read_summary(run_dir / "run")  # "stopped" says why; "final" is the last complete round
    return result_of(summary, setting, seed, cohort, round(time.perf_counter() - started, 1))


def finished(run_dir: Path, cfg: dict[str, Any], rounds: int) -> dict[str, Any] | None:
    """The summary of a finished run with this run config (all rounds, or stopped), else ``None``."""
    try:
        summary = read_summary(run_dir)
    except (OSError, ValueError):
        return None
    config = summary.get("config") or {}
    if any(config.get(k) != v for k, v in cfg.items()):
        return None
    done = [r for r in summary.get("rounds", []) if r.get("eval")]
    return summary if summary.get("stopped") or len(done) >= rounds else None


def result_of(summary: dict[str, Any], setting: str, seed: int, cohort: Path, seconds: Any) -> dict[str, Any]:
    """One run's line of the study: final RMSE, how it ended, what robust flagged."""
    stopped = (summary.get("stopped") or {}).get("reason")
    final = summary.get("final") or {}
    rmse = final.get("rmse")
    flagged = [(r["round"], r["robust"]["flagged"]) for r in summary.get("rounds", []) if r.get("robust")]
    attacker_name = cohort_sites(cohort)[ATTACKER].name
    return {
        "setting": setting, "seed": seed, "rmse": rmse if rmse is None or math.isfinite(rmse) else None,
        "rmse_raw": repr(rmse), "rounds_done": len([r for r in summary.get("rounds", []) if r.get("aggregated")]),
        "stopped": stopped, "seconds": seconds,
        "flagged_rounds": flagged, "attacker": attacker_name,
        "attacker_always_flagged": bool(flagged) and all(attacker_name in f for _, f in flagged),
        "honest_flagged": sorted({s for _, f in flagged for s in f if s != attacker_name}),
        "rejected": sum(len(r.get("rejected", [])) for r in summary.get("rounds", [])),
    }


def stats_of(values: list[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    return {"n": len(finite), "of": len(values), "mean": statistics.fmean(finite) if finite else None,
            "sd": statistics.stdev(finite) if len(finite) > 1 else None}


def fmt(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return f"no finite RMSE ({s['of']} runs)"
    sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
    missing = f" ({s['of'] - s['n']} runs without a finite RMSE)" if s["n"] < s["of"] else ""
    return f"{s['mean']:.3f}{sd}{missing}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["clean", "attacked", "attacked+robust"], choices=list(SETTINGS))
    parser.add_argument("--factor", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--max-clips", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--visits", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for the cohort and runs (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "robust_influence.json")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)

    work = args.work or Path(tempfile.mkdtemp(prefix="robust-influence-"))
    started = time.perf_counter()
    cohort = make_cohort(work, args, base_config(args))
    runs = []
    for seed in args.seeds:
        for setting in args.settings:
            result = one_run(cohort, work / "runs", setting, seed, args)
            print(f"{setting:16s} seed {seed}: rmse {result['rmse_raw']}, {result['rounds_done']} rounds aggregated, "
                  f"{result['seconds']} s" + (f", STOPPED {result['stopped'][:200]}" if result["stopped"] else "")
                  + (f", attacker flagged every round: {result['attacker_always_flagged']}, honest sites flagged: "
                     f"{result['honest_flagged']}" if result["flagged_rounds"] else ""), flush=True)
            runs.append(result)
    cfg = merged({**base_config(args), "cohort": str(cohort)})
    reference = oracle_reference(cohort, evaluated_visits(cohort_sites(cohort), cfg)) or {}
    table = {s: stats_of([r["rmse"] for r in runs if r["setting"] == s]) for s in args.settings}
    print("\nfinal video-level RMSE (normalised score), mean ± sd over seeds", args.seeds)
    for setting, s in table.items():
        print(f"  {setting:16s} {fmt(s)}")
    for name, value in reference.items():
        value = value.get("rmse") if isinstance(value, dict) else value
        print(f"  reference {name:13s} {value:.3f}" if isinstance(value, float) else f"  reference {name}: {value}")
    clean, robust = table.get("clean", {}).get("mean"), table.get("attacked+robust", {}).get("mean")
    within = None
    if clean and robust is not None:
        within = abs(robust - clean) / clean
        print(f"  attacked+robust vs clean: {within:+.1%} ({'within' if within <= 0.10 else 'outside'} the 10 % target)")
    write_report(args.out, {
        "benchmark": "robust_influence", "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "attacker_site": cohort_sites(cohort)[ATTACKER].name, "table": table, "reference": reference,
        "robust_vs_clean_relative": within, "runs": runs, "wall_seconds": round(time.perf_counter() - started, 1),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
