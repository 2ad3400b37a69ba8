"""Central (site-level) DP at the server (``dp.mode = "central"``), from Flower's wrappers.

The wrapper goes *inside* the validating :class:`strategies.PersonalizedStrategy`, via
``build_strategy(..., wrap_aggregator=...)``: validation runs first (shared names only,
finite, right shapes), then Flower's ``DifferentialPrivacyServerSideFixedClipping`` (or
``...AdaptiveClipping``) clips each site's update ``reply - global`` to
``dp.clipping_norm`` and adds Gaussian noise of std ``dp.noise_multiplier *
clipping_norm / num_sampled_clients`` to the mean.

Run-config keys (``""`` = unset): ``dp.noise_multiplier`` (required), ``dp.clipping_norm``
(fixed; initial norm when adaptive), ``dp.adaptive`` (bool), ``dp.target_clipped_quantile``,
``dp.clip_norm_lr``, ``dp.clipped_count_stddev``, ``dp.num_sampled_clients`` (default
``min-sites``), ``dp.delta`` (accounting; default 1e-5).

Site-level DP needs every site's contribution bounded by the same amount, so under
central DP the mean is *uniform* over sites (:class:`UniformWeights`), not weighted by
examples; Flower's accounted mode requires exactly that. Epsilon is accounted (fixed
clipping with FedAvg/FedProx aggregation) by Flower's wrapper with
:class:`server.dp_accountant.OpacusRdpAccountant`; adaptive clipping has no accountant.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from mpdrm.contract.runconfig import typed_section
from mpdrm.contract.schema import CentralDPConfig, DPSection

#: Run-config keys read by central DP (after ``dp.``).
CENTRAL_KEYS = ("mode", *(f.name for f in dataclasses.fields(CentralDPConfig)))


class UniformWeights(Strategy):
    """Give every site the same weight before the wrapped strategy aggregates.

    Parameters
    ----------
    strategy : Strategy
        The wrapped strategy (e.g. a Flower DP wrapper around FedAvg).
    weighted_by_key : str
        The metric FedAvg weights by; set to 1 in every reply.
    """

    def __init__(self, strategy: Strategy, weighted_by_key: str = "num-examples") -> None:
        super().__init__()
        self.strategy = strategy
        self.weighted_by_key = weighted_by_key

    def __repr__(self) -> str:
        return f"UniformWeights({self.strategy!r})"

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Set each reply's weight to 1, then delegate."""
        uniform = []
        for reply in replies:
            content = RecordDict()
            for name, record in reply.content.items():
                if isinstance(record, MetricRecord) and self.weighted_by_key in record:
                    record = MetricRecord({**dict(record), self.weighted_by_key: 1})
                content[name] = record
            uniform.append(Message(content=content, metadata=reply.metadata))
        return self.strategy.aggregate_train(server_round, uniform)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate."""
        return self.strategy.aggregate_evaluate(server_round, replies)


def central_settings(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The central-DP settings of a run config, or ``None`` when ``dp.mode`` is not ``central``.

    Unset keys (``""``) take :class:`~mpdrm.contract.schema.CentralDPConfig`'s defaults;
    ``num_sampled_clients`` defaults to the run's ``min-sites``.

    Raises
    ------
    ValueError
        Without ``dp.noise_multiplier``, or for a ``dp.*`` key central DP does not read.
    """
    if str(cfg.get("dp.mode", "none") or "none").lower() != "central":
        return None
    unknown = sorted(k for k in cfg if k.startswith("dp.") and k[3:] not in CENTRAL_KEYS and cfg[k] != "")
    if unknown:
        raise ValueError(f"dp.mode=central: unknown or client-side-only keys {unknown}; known: {list(CENTRAL_KEYS)}")
    values = {k: v for k, v in typed_section(cfg, "dp", DPSection).items() if k in CENTRAL_KEYS[1:] and v is not None}
    settings = dataclasses.asdict(CentralDPConfig(**values))
    if settings["noise_multiplier"] is None:
        raise ValueError("dp.mode=central needs dp.noise_multiplier (the server's Gaussian noise / clipping norm)")
    if settings["num_sampled_clients"] is None:
        settings["num_sampled_clients"] = int(cfg.get("min-sites", 2) or 2)
    return settings


def central_dp_wrapper(cfg: Mapping[str, Any]) -> Callable[[Strategy], Strategy] | None:
    """``wrap_aggregator`` for :func:`strategies.build_strategy`, or ``None`` without central DP.

    Fixed clipping over a FedAvg-type aggregator gets an accountant (epsilon per round);
    other aggregators (FedAdam, FedMedian, ...) would post-process or reweight the
    clipped updates before the noise, so central DP refuses them.
    """
    settings = central_settings(cfg)
    if settings is None:
        return None
    s = settings

    def wrap(aggregator: Strategy) -> Strategy:
        if not isinstance(aggregator, FedAvg) or type(aggregator).aggregate_train is not FedAvg.aggregate_train:
            raise ValueError(
                f"dp.mode=central needs a plain averaging rule (fedavg or fedprox), got {type(aggregator).__name__}: "
                "the noise is calibrated to the uniform mean of clipped updates"
            )
        if s["adaptive"]:
            dp: Strategy = DifferentialPrivacyServerSideAdaptiveClipping(
                aggregator, s["noise_multiplier"], s["num_sampled_clients"],
                initial_clipping_norm=s["clipping_norm"], target_clipped_quantile=s["target_clipped_quantile"],
                clip_norm_lr=s["clip_norm_lr"], clipped_count_stddev=s["clipped_count_stddev"],
            )
        else:
            accountant = None
            if s["noise_multiplier"] > 0:
                from .dp_accountant import no_amplification_accountant  # Opacus: ~2 s to import, DP runs only

                accountant = no_amplification_accountant(delta=s["delta"], num_sites=s["num_sampled_clients"])
            dp = DifferentialPrivacyServerSideFixedClipping(
                aggregator, s["noise_multiplier"], s["clipping_norm"], s["num_sampled_clients"], accountant=accountant,
            )
        return UniformWeights(dp, aggregator.weighted_by_key)

    return wrap


def central_dp_round(strategy: Strategy) -> dict[str, Any] | None:
    """What the strategy chain's central-DP wrapper reports after a round, or ``None``.

    ``{"noise_multiplier", "clipping_norm", "num_sampled_clients", "adaptive"}`` plus,
    with an accountant, ``"epsilon", "delta", "releases", "accountant"``.
    """
    item: Any = strategy
    while item is not None:
        if isinstance(item, (DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyServerSideAdaptiveClipping)):
            out: dict[str, Any] = {
                "noise_multiplier": float(item.noise_multiplier),
                "clipping_norm": float(item.clipping_norm),
                "num_sampled_clients": int(item.num_sampled_clients),
                "adaptive": isinstance(item, DifferentialPrivacyServerSideAdaptiveClipping),
            }
            accountant = getattr(item, "accountant", None)
            if accountant is not None:
                spent = accountant.get_privacy_spent()
                out.update({"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases,
                            "accountant": spent.accounting_method})
            return out
        item = getattr(item, "aggregator", None) or getattr(item, "strategy", None)
    return None
