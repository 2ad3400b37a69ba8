"""Client-side DP-SGD for one site's round (``dp.mode = "opacus"``): glue to ``mpdrm.privacy``.

The run config's ``dp.*`` keys (``dp.target_epsilon``, ``dp.noise_multiplier``,
``dp.max_grad_norm``, ``dp.delta``, ``dp.epsilon_budget``, ...) are the fields of
:class:`mpdrm.privacy.DPConfig`; ``""`` means unset (Flower run configs hold no ``None``).
With ``dp.target_epsilon`` and no ``dp.planned_rounds`` the run's ``num-server-rounds``
is the planned training.

The site's ledger (the accountant's history) is part of its saved state. It must never
go backwards: when the server resumes an older round, the site continues from the
older weights but keeps its newest ledger (:func:`newest_ledger`).

A round that would exceed the budget is declined before any data is touched: the reply
carries no arrays, a MetricRecord with the numbers of the decision (``budget-exhausted``
= 1, ``epsilon``, ...) and a ConfigRecord ``declined`` with the human-readable reason
(the server's validation logs it as a refusal; see ``strategies.validation``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from torch.utils.data import DataLoader

from mpdrm.contract import keys
from mpdrm.contract.schema import DP_MODES
from mpdrm.privacy.config import DPConfig

if TYPE_CHECKING:  # imported where a private round starts: Opacus costs about 2 s of start-up
    from mpdrm.privacy import BudgetDecision, PatientPoissonLoader, PrivateEngine


def dp_mode(cfg: Mapping[str, Any]) -> str:
    """The run's ``dp.mode`` (``none`` when absent); raises on an unknown value."""
    mode = str(cfg.get("dp.mode", "none") or "none").lower()
    if mode not in DP_MODES:
        raise ValueError(f"run config dp.mode={mode!r}: expected one of {DP_MODES}")
    return mode


def client_dp_config(cfg: Mapping[str, Any]) -> DPConfig | None:
    """The site's :class:`DPConfig` under ``dp.mode = "opacus"``, else ``None``.

    Parameters
    ----------
    cfg : Mapping
        The merged run config (flat dotted keys).
    """
    if dp_mode(cfg) != "opacus":
        return None
    names = {f.name for f in dataclasses.fields(DPConfig)}
    values: dict[str, Any] = {}
    unknown = []
    for key, value in cfg.items():
        if not key.startswith("dp.") or key == "dp.mode" or value == "":
            continue
        if key[3:].replace("-", "_") in names:
            values[key[3:]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"dp.mode=opacus: unknown or server-side-only keys {sorted(unknown)}; known: {sorted(names)}")
    if values.get("target_epsilon") is not None and values.get("planned_rounds") in (None, ""):
        values["planned_rounds"] = int(cfg["num-server-rounds"])
    for key in ("planned_rounds", "noise_seed", "clips_per_patient"):
        if key in values:
            values[key] = int(values[key])
    for key in ("max_grad_norm", "delta", "noise_multiplier", "target_epsilon", "epsilon_budget", "patients_per_step"):
        if key in values:
            values[key] = float(values[key])
    return DPConfig.from_dict(values)


def newest_ledger(states: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The DP state with the most accounted steps among a site's saved states.

    Epsilon only grows: whichever older state the site resumes from, its privacy
    ledger is the newest one it ever wrote.
    """
    best: dict[str, Any] | None = None
    for state in states:
        dp = (state or {}).get("dp")
        if not dp:
            continue
        steps = sum(int(n) for _, _, n in dp["accountant"]["history"])
        if best is None or steps > sum(int(n) for _, _, n in best["accountant"]["history"]):
            best = dict(dp)
    return best


def private_loader(dp_cfg: DPConfig, dataset: Any, *, batch_size: int, seed: int) -> DataLoader | PatientPoissonLoader:
    """The round's Poisson loader: of patients (``dp.unit=patient``) or of clips.

    Patient level: ``dp.patients_per_step`` expected patients per step (default
    ``batch_size // dp.clips_per_patient``, at least 1), ``dp.clips_per_patient`` clips each.
    Clip level: a plain ``DataLoader`` of expected batch ``batch_size`` (Opacus samples it).
    """
    if dp_cfg.unit == "patient":
        from mpdrm.privacy.patients import PatientPoissonLoader

        expected = dp_cfg.patients_per_step or max(1, int(batch_size) // int(dp_cfg.clips_per_patient))
        return PatientPoissonLoader(dataset, expected_patients=float(expected),
                                    clips_per_patient=int(dp_cfg.clips_per_patient), seed=int(seed))
    return DataLoader(dataset, batch_size=int(batch_size), generator=torch.Generator().manual_seed(int(seed) % 2**63))


def privacy_units(dp_cfg: DPConfig, dataset: Any) -> int:
    """How many units the guarantee protects at the site: patients, or clips."""
    return len(set(int(s) for s in dataset.subjects)) if dp_cfg.unit == "patient" else len(dataset)


def check_delta(dp_cfg: DPConfig, units: int) -> None:
    """Refuse a delta that is not below 1 / units (it would allow leaking a unit outright)."""
    if not dp_cfg.delta < 1.0 / max(units, 1):
        raise ValueError(
            f"dp.delta={dp_cfg.delta:g} is not below 1/{units} (the site has {units} "
            f"{dp_cfg.unit}s): with such a delta the guarantee allows releasing one {dp_cfg.unit}'s "
            f"data outright; use dp.delta <= {0.1 / max(units, 1):.2g}"
        )


class PrivateRound:
    """One site's DP-SGD round: Poisson loader, budget decision, training engine, ledger.

    Parameters
    ----------
    dp_cfg : DPConfig
        The run's client-side DP settings.
    ledger : dict or None
        The site's newest DP state (:func:`newest_ledger`).
    dataset : Dataset
        The site's training set.
    batch_size : int
        Clip level: the expected Poisson batch (the sample rate is ``1 / ceil(N / batch_size)``);
        patient level: ``batch_size // dp.clips_per_patient`` expected patients by default.
    epochs, max_steps : int, int or None
        The round's local training length (``train.epochs``, ``train.max_steps``).
    seed : int
        Seed of the loader's generator (Opacus draws the Poisson masks from it).
    """

    def __init__(self, dp_cfg: DPConfig, ledger: Mapping[str, Any] | None, dataset: Any, *, batch_size: int,
                 epochs: int, max_steps: int | None, seed: int) -> None:
        self.units = privacy_units(dp_cfg, dataset)
        self.patients = privacy_units(dataclasses.replace(dp_cfg, unit="patient"), dataset)
        check_delta(dp_cfg, self.units)
        from mpdrm.privacy.site import SitePrivacy, round_steps

        self.privacy = SitePrivacy(dp_cfg, state=ledger)
        self.loader = private_loader(dp_cfg, dataset, batch_size=batch_size, seed=seed)
        self.steps_planned = round_steps(self.loader, epochs, max_steps)
        self.decision: BudgetDecision = self.privacy.plan_round(self.loader, self.steps_planned)
        self.summary: dict[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        """Whether the round fits in the site's budget."""
        return self.decision.allowed

    def engine(self) -> PrivateEngine:
        """The ``engine`` of ``mpdrm.training.train_local`` for this round (DP-SGD; it
        unwraps the model when training ends)."""
        return self.privacy.engine()

    def close(self) -> dict[str, Any]:
        """Close the round after training; return the ledger to save in the site state."""
        self.summary = self.privacy.finish()
        return self.privacy.state_dict()

    def state(self) -> dict[str, Any]:
        """The ledger as it stands (for a declined round: unchanged)."""
        return self.privacy.state_dict()

    def metrics(self) -> dict[str, float]:
        """The reply's DP metrics: ``epsilon`` and the totals as ``dp-*`` keys."""
        totals = self.privacy.totals()
        out = {
            "epsilon": float(totals["epsilon"]),
            "dp-delta": float(totals["delta"]),
            "dp-steps": float(totals["steps"]),
            "dp-noise-multiplier": float(self.decision.noise_multiplier),
            "dp-sample-rate": float(self.decision.sample_rate),
            "dp-max-grad-norm": float(self.privacy.cfg.max_grad_norm),
            keys.DP_PATIENT_LEVEL: float(self.privacy.cfg.unit == "patient"),
            keys.DP_PATIENTS: float(self.patients),
        }
        if self.summary is not None:
            out["dp-steps-round"] = float(self.summary["steps_round"])
        if math.isfinite(self.decision.epsilon_budget):
            out["dp-epsilon-budget"] = float(self.decision.epsilon_budget)
        return out


def decline_reply(message: Message, site_id: int, dp_round: PrivateRound) -> Message:
    """The reply of a site whose next round would exceed its epsilon budget.

    No ArrayRecord; MetricRecord ``metrics`` with ``site-id``, ``budget-exhausted`` = 1,
    the site's ``epsilon`` so far and the decision's numbers; ConfigRecord
    :data:`mpdrm.contract.keys.DECLINED` with ``reason``.
    """
    numbers = {f"dp-{k.replace('_', '-')}": float(v) for k, v in dp_round.decision.to_metrics().items()
               if isinstance(v, (int, float)) and math.isfinite(float(v))}
    metrics = {**numbers, **dp_round.metrics(), keys.SITE_ID: int(site_id), keys.BUDGET_EXHAUSTED: 1}
    content = RecordDict({keys.METRICS: MetricRecord(metrics),
                          keys.DECLINED: ConfigRecord({keys.DECLINED_REASON: dp_round.decision.reason})})
    return Message(content, reply_to=message)
