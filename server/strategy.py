"""Build the run's strategy and save/restore its state for checkpoints."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.serverapp.strategy import FedAvg, Strategy

import strategies
from strategies.personalized import PersonalizedStrategy
from strategies.round_log import RoundLog

from mpdrm.contract.names import LOCAL_PREFIX
from mpdrm.contract.runconfig import section, typed_section
from mpdrm.contract.schema import StrategySection

from .central_dp import central_dp_wrapper
from .local_only import LocalOnlyStrategy

def make_strategy(cfg: Mapping[str, Any], shared_names: Sequence[str]) -> Strategy:
    """The strategy of the run config's ``mode`` and ``strategy.*`` settings.

    ``mpdrm``: ``strategies.build_strategy`` over the partition's shared names.
    ``fedavg_full``: the same aggregator, accepting the whole model (baseline).
    ``local_only``: :class:`LocalOnlyStrategy` (no aggregation).

    ``strategy.robust``, ``strategy.robust_bound``, ``strategy.robust_trim`` (bounded
    influence of one site, :func:`robust_settings`) apply to both aggregating modes.
    """
    mode = str(cfg["mode"])
    min_sites = int(cfg["min-sites"])
    sampling = {
        "fraction_train": float(cfg["fraction-train"]),
        "fraction_evaluate": float(cfg["fraction-evaluate"]),
        "min_available_nodes": min_sites,
    }
    if mode == "local_only":
        return LocalOnlyStrategy(FedAvg(min_train_nodes=min_sites, min_evaluate_nodes=min_sites, **sampling))
    options = {**sampling, **section(cfg, "strategy.options")}
    name = str(cfg["strategy.aggregation"])
    wrap = central_dp_wrapper(cfg)  # dp.mode=central: Flower's server-side clipping + noise
    robust = robust_settings(cfg, central_dp=wrap is not None)
    if mode == "mpdrm":
        return strategies.build_strategy(name, list(shared_names), min_train_nodes=min_sites, min_evaluate_nodes=min_sites,
                                         wrap_aggregator=wrap, robust=robust, **options)
    if mode == "fedavg_full":
        inner = strategies.build_strategy(
            name, [n for n in shared_names if not n.startswith(LOCAL_PREFIX)] or ["_"],
            min_train_nodes=min_sites, min_evaluate_nodes=min_sites, wrap_aggregator=wrap, **options,
        )
        return PersonalizedStrategy(
            inner.aggregator, list(shared_names), min_train_nodes=min_sites, min_evaluate_nodes=min_sites,
            local_prefix=None,  # the whole model is shared: no name is site-local
            robust=robust,
        )
    raise ValueError(f"unknown mode {mode!r}: mpdrm, fedavg_full or local_only (centralized runs without Flower)")


def robust_settings(cfg: Mapping[str, Any], *, central_dp: bool = False) -> strategies.RobustConfig | None:
    """The bounded-influence settings of a run config (``strategy.robust*``), or ``None`` when off.

    Under central DP (``dp.mode=central``) only ``strategy.robust=fixed`` without trimming is
    accepted: a fixed bound is a function of one site's update alone, so Flower's clipping
    and noise still bound and hide each site; a median-derived bound or a trimmed mean makes
    one site's contribution depend on the others' updates, which the central-DP accounting
    does not cover.

    Raises
    ------
    ValueError
        For an unknown mode, a bad bound or trim, or a combination central DP cannot account for.
    """
    values = typed_section(cfg, "strategy", StrategySection)
    robust = strategies.robust_config(values.get("robust"), values.get("robust_bound"), values.get("robust_trim") or 0.0)
    if robust is not None and central_dp and (robust.mode != "fixed" or robust.trim > 0):
        raise ValueError(
            f"dp.mode=central with strategy.robust={robust.mode or '(off)'!r}, strategy.robust_trim={robust.trim:g}: "
            "under central DP only strategy.robust=fixed (no trimming) keeps each site's contribution a function of "
            "its own update, as the noise calibration assumes; use strategy.robust=fixed with strategy.robust_bound"
        )
    return robust


def capture_state(strategy: Strategy) -> dict[str, Any]:
    """Server-optimizer state of the aggregator chain, the strategy's per-round logs and
    the node id -> site id map (names a dead site after a resume), as plain data only
    (dicts, lists, scalars, NumPy arrays: what ``mpdrm.tensorfile`` stores)."""
    rounds = getattr(strategy, "rounds", {})
    state = {"aggregators": strategies.aggregator_state(strategy),
             "rounds": {int(n): log.to_state() for n, log in rounds.items()},
             "node_sites": {int(k): int(v) for k, v in getattr(strategy, "node_sites", {}).items()}}
    return copy.deepcopy(state)


def restore_state(strategy: Strategy, state: Mapping[str, Any]) -> None:
    """Put :func:`capture_state` values back onto an identically built strategy."""
    strategies.load_aggregator_state(strategy, copy.deepcopy(list(state["aggregators"])))
    if hasattr(strategy, "rounds"):
        strategy.rounds = {int(n): RoundLog.from_state(log) for n, log in dict(state["rounds"]).items()}
    if hasattr(strategy, "node_sites"):
        strategy.node_sites = {int(k): int(v) for k, v in dict(state.get("node_sites", {})).items()}
