"""The server's round loop: Flower's ``Strategy.start`` loop, resumable and checkpointed.

``Strategy.start`` always begins at round 1 and offers no per-round hook besides a
central evaluation function; this loop runs rounds ``first..last`` with the same
strategy calls (``configure_train`` -> ``send_and_receive`` -> ``aggregate_train`` ->
``configure_evaluate`` -> ... -> ``aggregate_evaluate``) and calls ``on_round`` after
each completed round (checkpoint, summary, progress line).
"""
from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

RoundHook = Callable[[int, ArrayRecord], "bool | None"]


def evaluate_round(strategy: Strategy, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord, timeout: float) -> MetricRecord | None:
    """One federated evaluation of ``arrays`` (round 0: the untrained model)."""
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
) -> ArrayRecord:
    """Run rounds ``first..last``; returns the final global arrays.

    A round whose aggregation fails (too few valid replies) keeps the global arrays;
    ``on_round`` returning True ends the run after that round.
    """
    for server_round in range(first, last + 1):
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(train_config)), grid)
        replies = grid.send_and_receive(messages, timeout=timeout)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        evaluate_round(strategy, grid, server_round, arrays, evaluate_config, timeout)
        if on_round(server_round, arrays):  # True: the run must end (e.g. no site has budget left)
            break
    return arrays
