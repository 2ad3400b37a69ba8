"""The Flower ServerApp (``[tool.flwr.app.components] serverapp = "server.app:app"``).

Reads the run config, builds the strategy over the shared names of the seeded initial
model, evaluates the untrained model (round 0), runs the rounds, and after each round
writes ``checkpoint.safetensors`` (:mod:`server.checkpoint`) and ``summary.json``
atomically into ``run-dir``. With ``resume=true`` it continues after the last complete
round of that checkpoint.

Each stage waits for its replies at most ``round-timeout`` seconds, and at most
``round-grace`` seconds once ``min-sites`` valid replies are in (:class:`server.loop.Deadline`):
a site answering later is recorded as a ``late`` rejection.

Too few sites (``min-sites``, :mod:`server.min_sites`) end the run: fewer connected
sites than the minimum after ``min-sites-wait`` seconds, or a round with fewer valid
training replies, logs an ERROR, records ``stopped`` (``failed: true``) in
``summary.json`` and raises :class:`~server.min_sites.TooFewSites`, so the Flower run
ends ``finished:failed`` with that message.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log as flwr_log

from mpdrm.contract import keys
from mpdrm.contract.initial import load_initial_weights
from mpdrm.contract.runconfig import merged
from mpdrm.contract.sharing import build_site_model, kept_names, outbound_state, run_shared_names
from mpdrm.contract.sites import site_names as cohort_site_names

from .checkpoint import Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .dp_report import budget_stop, record_round_dp
from .loop import Deadline, Gate, TrainCheck, evaluate_round, run_rounds
from .min_sites import TooFewSites, ensure_nodes, train_shortfall
from .plots import write_plots
from .progress import progress_line
from .strategy import capture_state, make_strategy, restore_state
from .summary import add_round, new_summary, rename_sites, round_entry, write_summary

log = logging.getLogger("fedmpdrm.server")


def site_names(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Site id -> name; known in simulation (partition id -> sorted cohort folder)."""
    return cohort_site_names(str(cfg.get("cohort", "")))


def learn_site_names(strategy: Strategy, sites: dict[str, str], summary: dict[str, Any]) -> None:
    """Add the names simulated sites reported (``mpdrm.contract.keys.SITE``) to ``sites``.

    A run on the default synthetic cohort (``flwr run .`` with no ``cohort``) learns its
    sites' folder names only from their replies; deployed sites report none, so they stay
    ``site <id>``. ``summary["sites"]`` and the round-0 evaluation follow the names.
    """
    reported = dict(getattr(strategy, "site_names", {}))
    if all(sites.get(k) == v for k, v in reported.items()):
        return
    sites.update(reported)
    summary["sites"] = dict(sites)
    if "initial" in summary:
        summary["initial"]["eval"] = rename_sites(summary["initial"]["eval"], sites)


def instruction_config(cfg: Mapping[str, Any]) -> ConfigRecord:
    """The training/evaluation settings sent to the sites with every instruction."""
    return ConfigRecord({k: v for k, v in cfg.items() if k.startswith(("train.", "eval."))})


def site_rules(cfg: Mapping[str, Any], grid: Grid, strategy: Strategy, sites: dict[str, str],
               summary: dict[str, Any]) -> tuple[Gate, TrainCheck]:
    """The ``min-sites`` hooks of :func:`server.loop.run_rounds` (both raise :class:`TooFewSites`).

    ``gate``: before a stage samples sites, wait at most ``min-sites-wait`` seconds for
    ``min-sites`` connected nodes (an evaluation with ``fraction-evaluate=0`` samples none).
    ``after_train``: a round with fewer valid training replies than ``min-sites`` ends the
    run, unless the privacy-budget rule explains it (that rule stops the run after the round).
    """
    min_sites, wait = int(cfg["min-sites"]), float(cfg["min-sites-wait"])
    skip_evaluate = float(cfg["fraction-evaluate"]) <= 0.0

    def known() -> dict[int, int]:
        return dict(getattr(strategy, "node_sites", {}))

    def gate(server_round: int, stage: str) -> None:
        if not (stage == "evaluate" and skip_evaluate):
            ensure_nodes(grid, server_round, stage, min_sites, wait, known(), sites)

    def after_train(server_round: int) -> None:
        raw = strategy.rounds[server_round].to_dict()
        learn_site_names(strategy, sites, summary)
        reason = train_shortfall(raw, min_sites, known(), sites)
        if reason is None:
            return
        tentative = {**summary, "rounds": [*summary["rounds"], round_entry(raw, sites)]}
        if budget_stop(tentative, min_sites) is None:
            raise TooFewSites(server_round, "train", reason)

    return gate, after_train


def record_failure(run_dir: Path, summary: dict[str, Any], strategy: Strategy, sites: Mapping[str, str],
                   error: TooFewSites) -> None:
    """Log the failure as an ERROR and record it in ``summary.json`` (``stopped``).

    ``stopped`` gets ``{"round", "stage", "reason", "failed": true}``; a round whose
    training came back short is added to ``rounds`` (with its rejections) without
    changing ``final`` (the evaluation of the last complete round).
    """
    flwr_log(logging.ERROR, "run stopped, too few sites: %s", error.reason)
    print(f"[fedmpdrm] ERROR: run stopped: {error.reason}", flush=True)
    summary["stopped"] = {"round": error.server_round, "stage": error.stage, "reason": error.reason,
                          "failed": True}
    rounds = getattr(strategy, "rounds", {})
    if error.stage == "train" and error.server_round in rounds:
        entry = round_entry(rounds[error.server_round].to_dict(), sites)
        summary["rounds"] = [r for r in summary["rounds"] if r["round"] != error.server_round] + [entry]
    write_summary(run_dir, summary)


def initial_model(cfg: Mapping[str, Any]) -> tuple[list[str], list[str], ArrayRecord]:
    """``(shared, kept, arrays)``: the seeded initial model's shared and site-kept names and
    the shared arrays the first instruction carries (empty for ``local_only``); with run
    config ``init`` those arrays come from that file (:mod:`mpdrm.contract.initial`)."""
    seed = int(cfg["seed"])
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    model = build_site_model(cfg, num_subjects=1)
    shared = run_shared_names(model, cfg)
    state = outbound_state(model, shared) if shared else {}
    if str(cfg.get("init") or ""):  # start from pretrained shared weights (checked against the model)
        state = load_initial_weights(str(cfg["init"]), state)
        print(f"[fedmpdrm] starting from the shared weights of {cfg['init']}", flush=True)
    arrays = ArrayRecord(state) if shared else ArrayRecord()
    return shared, kept_names(model, shared), arrays


def start_or_resume(cfg: Mapping[str, Any], run_dir: Path, strategy: Strategy, arrays: ArrayRecord,
                    names: tuple[list[str], list[str]], sites: Mapping[str, str]) -> tuple[dict[str, Any], int, ArrayRecord, bool]:
    """``(summary, first round, arrays, resumed)``: a new run, or with ``resume=true`` the
    checkpoint's round, arrays, strategy state and RNG."""
    ckpt = load_checkpoint(run_dir) if bool(cfg["resume"]) else None
    if ckpt is None:
        return new_summary(cfg, names[0], names[1], str(cfg["mode"]), sites), 1, arrays, False
    restore_state(strategy, ckpt.strategy_state)
    restore_rng(ckpt.rng)
    summary = ckpt.summary
    summary["resumed_from"] = ckpt.round
    if ckpt.fallback:        # kept in the summary too: a log stream can lose its last lines
        summary.setdefault("checkpoint_fallbacks", []).append(ckpt.fallback)
    print(f"[fedmpdrm] resuming {run_dir} after round {ckpt.round}", flush=True)
    return summary, ckpt.round + 1, ArrayRecord({k: Array(v) for k, v in ckpt.arrays.items()}), True


def round_recorder(cfg: Mapping[str, Any], run_dir: Path, strategy: Strategy, summary: dict[str, Any],
                   sites: dict[str, str], clock: Any) -> Any:
    """The ``on_round`` hook of :func:`server.loop.run_rounds`: record the round in the
    summary, save checkpoint and summary atomically, print progress; ``True`` stops the
    run (too few sites left with privacy budget)."""
    rounds = int(cfg["num-server-rounds"])

    def on_round(server_round: int, current: ArrayRecord) -> bool:
        learn_site_names(strategy, sites, summary)
        entry = round_entry(strategy.rounds[server_round].to_dict(), sites)
        entry["wall_seconds"] = clock()  # the run's wall clock when this round ended
        record_round_dp(summary, entry, strategy)
        add_round(summary, entry)
        summary["wall_seconds"] = entry["wall_seconds"]
        stop = budget_stop(summary, int(cfg["min-sites"]))
        if stop is not None:
            summary["stopped"] = {"round": server_round, "reason": stop}
            print(f"[fedmpdrm] stopping after round {server_round}: {stop}", flush=True)
        checkpoint = Checkpoint(round=server_round, arrays={k: v.numpy() for k, v in current.items()},
                                strategy_state=capture_state(strategy), rng=capture_rng(), summary=summary)
        save_checkpoint(run_dir, checkpoint)
        write_summary(run_dir, summary)
        print(progress_line(server_round, rounds, entry), flush=True)
        return stop is not None

    return on_round


def evaluate_initial(strategy: Strategy, grid: Grid, arrays: ArrayRecord, config: ConfigRecord, timeout: float,
                     gate: Gate, summary: dict[str, Any], sites: Mapping[str, str], rounds: int,
                     deadline: Deadline | None = None, clock: Callable[[], float] | None = None) -> None:
    """Round 0: the untrained model's evaluation, recorded as ``summary["initial"]`` (with
    the run's wall clock when it ended, ``wall_seconds``, when ``clock`` is given)."""
    evaluate_round(strategy, grid, 0, arrays, config, timeout, gate, deadline)
    initial = strategy.rounds[0].to_dict()
    summary["initial"] = {"eval": rename_sites(initial["eval"], sites), "bytes_down": initial["bytes_down"]}
    if clock is not None:
        summary["initial"]["wall_seconds"] = clock()
    print(progress_line(0, rounds, summary["initial"]), flush=True)


def run_server(grid: Grid, context: Context, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ServerApp's work; returns the final summary.

    Parameters
    ----------
    grid : Grid
        Flower's grid to the sites.
    context : Context
        The ServerApp context (its ``run_config`` is used).
    overrides : Mapping, optional
        Run-config entries layered over ``context.run_config``.
    """
    start = time.perf_counter()
    cfg = merged(context.run_config, overrides)
    run_dir = Path(str(cfg["run-dir"])).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds, timeout = int(cfg["num-server-rounds"]), float(cfg["round-timeout"])
    deadline = Deadline(min_sites=int(cfg["min-sites"]), grace=float(cfg["round-grace"]))
    shared, kept, arrays = initial_model(cfg)
    strategy = make_strategy(cfg, shared)
    sites = site_names(cfg)
    instructions = instruction_config(cfg)
    summary, first, arrays, resumed = start_or_resume(cfg, run_dir, strategy, arrays, (shared, kept), sites)
    sites.update(summary.get("sites", {}))  # a resumed run keeps the names it learned
    gate, after_train = site_rules(cfg, grid, strategy, sites, summary)
    base_seconds = float(summary.get("wall_seconds", 0.0))

    def clock() -> float:
        return base_seconds + time.perf_counter() - start

    on_round = round_recorder(cfg, run_dir, strategy, summary, sites, clock)
    try:
        if not resumed:
            evaluate_initial(strategy, grid, arrays, instructions, timeout, gate, summary, sites, rounds, deadline,
                             clock)
            learn_site_names(strategy, sites, summary)
        if first <= rounds:
            run_rounds(strategy, grid, arrays, first=first, last=rounds, train_config=instructions,
                       evaluate_config=instructions, timeout=timeout, on_round=on_round,
                       gate=gate, after_train=after_train, deadline=deadline)
    except TooFewSites as error:  # the ServerApp ends failed, with the reason as its message
        summary["wall_seconds"] = clock()
        record_failure(run_dir, summary, strategy, sites, error)
        raise
    summary["wall_seconds"] = clock()
    write_summary(run_dir, summary)
    write_plots(summary, run_dir / "plots")
    return summary


def create_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """Build the ServerApp; ``overrides`` are layered over ``context.run_config``."""
    extra = dict(overrides or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, extra)

    return server_app


app = create_server_app()
