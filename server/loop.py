"""The server's round loop: Flower's ``Strategy.start`` loop, resumable and checkpointed.

``Strategy.start`` always begins at round 1 and offers no per-round hook besides a
central evaluation function; this loop runs rounds ``first..last`` with the same
strategy calls (``configure_train`` -> ``send_and_receive`` -> ``aggregate_train`` ->
``configure_evaluate`` -> ... -> ``aggregate_evaluate``) and calls ``on_round`` after
each completed round (checkpoint, summary, progress line).

Two optional hooks end a run that has too few sites (see :mod:`server.min_sites`):
``gate(round, stage)`` runs before each stage samples sites, ``after_train(round)``
after each aggregation; either may raise to end the run.
"""
from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

RoundHook = Callable[[int, ArrayRecord], "bool | None"]
Gate = Callable[[int, str], None]
"""``gate(server_round, stage)`` before ``configure_<stage>``; raises to end the run."""
TrainCheck = Callable[[int], None]
"""``after_train(server_round)`` after ``aggregate_train``; raises to end the run."""


def evaluate_round(strategy: Strategy, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                   timeout: float, gate: Gate | None = None) -> MetricRecord | None:
    """One federated evaluation of ``arrays`` (round 0: the untrained model)."""
    if gate is not None:
        gate(server_round, "evaluate")
    messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), grid)
    replies = grid.send_and_receive(messages, timeout=timeout)
    return strategy.aggregate_evaluate(server_round, replies)


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first: int,
    last: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    timeout: float,
    on_round: RoundHook,
    gate: Gate | None = None,
    after_train: TrainCheck | None = None,
) -> ArrayRecord:
    """Run rounds ``first..last``; returns the final global arrays.

    A round whose aggregation fails (too few valid replies) keeps the global arrays;
    ``on_round`` returning True ends the run after that round. ``gate`` and
    ``after_train`` (optional) may raise to end the run (too few sites).
    """
    for server_round in range(first, last + 1):
        if gate is not None:
            gate(server_round, "train")
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(train_config)), grid)
        replies = grid.send_and_receive(messages, timeout=timeout)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if after_train is not None:
            after_train(server_round)
        if aggregated is not None:
            arrays = aggregated
        evaluate_round(strategy, grid, server_round, arrays, evaluate_config, timeout, gate)
        if on_round(server_round, arrays):  # True: the run must end (e.g. no site has budget left)
            break
    return arrays
