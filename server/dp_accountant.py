"""Flower's privacy-accountant protocol backed by Opacus's RDP analysis.

Flower 1.42's server-side DP wrappers account through a ``PrivacyAccountant``
(``flwr.supercore.privacy_accounting``); its own ``RdpAccountant`` needs Google's
``dp-accounting`` package, which this project does not install. This class implements
the same protocol with Opacus's RDP functions (``opacus.accountants.analysis.rdp``), so
Flower's wrapper does its own bookkeeping (pending event per round, composition on
release, uniform-weight check) and we only supply the numbers.

Supported models: Gaussian releases without amplification (``no-amplification``, the
only one Flower's fixed-clipping wrapper accepts) and Poisson-sampled ones, both with
add-or-remove-one neighbouring clients.
"""
from __future__ import annotations

import math
from typing import Any

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    SamplingMethod,
)
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

ACCOUNTING_METHOD = "rdp-opacus"
ORDERS: tuple[float, ...] = tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


class OpacusRdpAccountant:
    """Cumulative client-level (epsilon, delta) of central-DP releases, Flower protocol.

    Parameters
    ----------
    config : PrivacyConfig
        Flower's accounting configuration (``target_delta``, ``population_size``,
        sampling method, optional ``max_epsilon``).
    """

    def __init__(self, config: PrivacyConfig) -> None:
        if config.neighboring_relation is not NeighboringRelation.ADD_OR_REMOVE_ONE:
            raise ValueError("OpacusRdpAccountant supports add-or-remove-one neighbouring only")
        if config.sampling_method not in (SamplingMethod.NO_AMPLIFICATION, SamplingMethod.POISSON):
            raise ValueError(f"OpacusRdpAccountant: unsupported sampling method {config.sampling_method.value!r}")
        self._config = config
        self._compositions: list[tuple[GaussianPrivacyEvent, int]] = []

    @property
    def config(self) -> PrivacyConfig:
        """The privacy configuration."""
        return self._config

    @property
    def num_releases(self) -> int:
        """Number of composed releases."""
        return sum(count for _, count in self._compositions)

    # --- math --------------------------------------------------------------------
    def _rate(self, event: GaussianPrivacyEvent) -> float:
        if self._config.sampling_method is SamplingMethod.NO_AMPLIFICATION:
            return 1.0
        return event.sample_size / event.population_size

    def _rdp(self, compositions: list[tuple[GaussianPrivacyEvent, int]]) -> Any:
        total = 0.0
        for event, count in compositions:
            total = total + compute_rdp(q=self._rate(event), noise_multiplier=event.noise_multiplier,
                                        steps=int(count), orders=list(ORDERS))
        return total

    def _epsilon(self, compositions: list[tuple[GaussianPrivacyEvent, int]], delta: float) -> tuple[float, float | None]:
        if not compositions:
            return 0.0, None
        eps, order = get_privacy_spent(orders=list(ORDERS), rdp=self._rdp(compositions), delta=delta)
        return float(eps), float(order)

    def _check(self, event: GaussianPrivacyEvent, count: int) -> None:
        if event.population_size != self._config.population_size:
            raise ValueError(
                f"privacy event population_size {event.population_size} != configured {self._config.population_size}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")

    # --- protocol ----------------------------------------------------------------
    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        """Record ``count`` identical releases."""
        self._check(event, count)
        self._compositions.append((event, count))

    def get_epsilon(self, delta: float) -> float:
        """Cumulative epsilon at ``delta``."""
        return self._epsilon(self._compositions, delta)[0]

    def get_delta(self, epsilon: float) -> float:
        """Cumulative delta at ``epsilon``: the inverse, per order, of the conversion that
        :meth:`get_epsilon` uses (Balle et al. 2020, as in Opacus), minimised over orders."""
        if not self._compositions:
            return 0.0
        rdp = self._rdp(self._compositions)
        log_delta = min((a - 1) * (r - epsilon + math.log1p(-1 / a)) - math.log(a)
                        for a, r in zip(ORDERS, rdp) if a > 1)
        return float(math.exp(min(0.0, log_delta)))

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        """Cumulative (epsilon, delta) and the number of releases."""
        target = self._config.target_delta if delta is None else float(delta)
        eps, order = self._epsilon(self._compositions, target)
        return PrivacySpent(epsilon=eps, delta=target, num_releases=self.num_releases,
                            accounting_method=ACCOUNTING_METHOD, optimal_order=order)

    def would_exceed(self, event: GaussianPrivacyEvent, max_epsilon: float | None = None, count: int = 1) -> bool:
        """Whether composing ``event`` would pass ``max_epsilon`` (or the configured one)."""
        self._check(event, count)
        limit = self._config.max_epsilon if max_epsilon is None else max_epsilon
        if limit is None:
            raise ValueError("max_epsilon must be given in PrivacyConfig or to would_exceed()")
        eps, _ = self._epsilon([*self._compositions, (event, count)], self._config.target_delta)
        return eps > limit

    def state_dict(self) -> dict[str, object]:
        """JSON-able ledger: the configuration and the composed events."""
        return {
            "backend": ACCOUNTING_METHOD,
            "config": {
                "target_delta": self._config.target_delta,
                "population_size": self._config.population_size,
                "sampling_method": self._config.sampling_method.value,
                "max_epsilon": self._config.max_epsilon,
            },
            "compositions": [
                [event.noise_multiplier, event.sample_size, event.population_size, count]
                for event, count in self._compositions
            ],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`; the configuration must be the same."""
        if state.get("backend") != ACCOUNTING_METHOD:
            raise ValueError(f"accountant state of backend {state.get('backend')!r}, expected {ACCOUNTING_METHOD!r}")
        config = state.get("config") or {}
        mine = self.state_dict()["config"]
        if config != mine:
            raise ValueError(f"accountant state was kept with {config}, but this run is configured {mine}")
        self._compositions = [
            (GaussianPrivacyEvent(float(nm), int(size), int(pop)), int(count))
            for nm, size, pop, count in state.get("compositions", [])  # type: ignore[union-attr]
        ]


def no_amplification_accountant(*, delta: float, num_sites: int, max_epsilon: float | None = None) -> OpacusRdpAccountant:
    """The accountant of Flower's server-side fixed clipping: every sampled site each round."""
    config = PrivacyConfig(
        target_delta=float(delta),
        population_size=int(num_sites),
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=max_epsilon,
    )
    return OpacusRdpAccountant(config)
