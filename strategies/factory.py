"""Build the personalised strategy from a config name and options."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Strategy,
)

from .personalized import PersonalizedStrategy
from .robust import RobustConfig

AGGREGATORS: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
}
"""Aggregation rules by config name. FedMedian and FedTrimmedAvg ignore the
example weights (Flower's implementations); FedProx sends ``proximal-mu`` in the
train ConfigRecord and its proximal term is applied by the client."""

def _option_names(cls: type[FedAvg]) -> set[str]:
    """Return the keyword options of a Flower strategy class."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


# pylint: disable=too-many-arguments
def build_strategy(
    name: str,
    shared_names: Sequence[str],
    *,
    min_train_nodes: int = 2,
    min_evaluate_nodes: int = 2,
    wrap_aggregator: Callable[[Strategy], Strategy] | None = None,
    robust: RobustConfig | None = None,
    **options: Any,
) -> PersonalizedStrategy:
    """Return a ready :class:`PersonalizedStrategy` using aggregation rule ``name``.

    Parameters
    ----------
    name : str
        One of :data:`AGGREGATORS` (case-insensitive): ``fedavg`` (default rule,
        example-weighted), ``fedadam``, ``fedyogi``, ``fedavgm``, ``fedprox``,
        ``fedmedian``, ``fedtrimmedavg``.
    shared_names : Sequence[str]
        The names that may leave a site.
    min_train_nodes : int (default: 2)
        Nodes sampled at least, and valid training replies needed, per round.
    min_evaluate_nodes : int (default: 2)
        Nodes sampled at least, and valid evaluation replies needed, per round.
    wrap_aggregator : Callable[[Strategy], Strategy] | None (default: None)
        Optional wrapper applied to the Flower aggregator *inside* the validation,
        e.g. ``lambda s: DifferentialPrivacyServerSideFixedClipping(s, 1.0, 0.5, 3)``:
        the DP wrapper then only ever sees validated, shared-only replies.
    robust : RobustConfig | None (default: None)
        Bounded influence of one site (``strategy.robust``): every valid update is
        norm-bounded and/or coordinate-wise trimmed before the (wrapped) aggregator sees
        it (:class:`strategies.robust_replies.RobustFilter`).
    **options : Any
        Options of the Flower class (``fraction_train``, ``min_available_nodes``,
        ``eta``, ``beta_1``, ``server_momentum``, ``proximal_mu``, ``beta``, ...).
        Dashes are accepted for underscores (``proximal-mu``).

    Returns
    -------
    PersonalizedStrategy
        The validating, personalised strategy around the chosen Flower aggregator.

    Raises
    ------
    ValueError
        For an unknown rule name or an option the rule does not take.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in AGGREGATORS:
        raise ValueError(
            f"unknown aggregation rule '{name}': choose one of {sorted(AGGREGATORS)}"
        )
    cls = AGGREGATORS[key]
    kwargs = {option.replace("-", "_"): value for option, value in options.items()}
    allowed = _option_names(cls)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"option(s) {unknown} not accepted by {cls.__name__}; "
            f"accepted: {sorted(allowed)}"
        )
    aggregator: Strategy = cls(
        min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes, **kwargs
    )
    if wrap_aggregator is not None:
        aggregator = wrap_aggregator(aggregator)
    return PersonalizedStrategy(
        aggregator,
        shared_names,
        min_train_nodes=min_train_nodes,
        min_evaluate_nodes=min_evaluate_nodes,
        weighted_by_key=kwargs.get("weighted_by_key", "num-examples"),
        robust=robust,
    )
