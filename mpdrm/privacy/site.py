"""One object per site that ties config, ledger, budget and Opacus wrapping together."""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader

from .accounting import SiteAccountant
from .budget import BudgetDecision, check_budget
from .config import DPConfig
from .engine import PrivateTraining, accounting_sample_rate, make_private
from .noise import calibrate_noise_multiplier
from .patients import PatientPoissonLoader, make_patient_private
from .private_engine import PrivateEngine

STATE_VERSION = 1


def round_steps(loader: DataLoader, epochs: int = 1, max_steps: int | None = None) -> int:
    """DP-SGD steps of a round of ``epochs`` Poisson epochs, capped at ``max_steps``.

    Matches ``mpdrm.training.train_local`` (``cfg.epochs``, ``cfg.max_steps``).
    """
    steps = int(epochs) * int(1 / accounting_sample_rate(loader))
    return steps if max_steps is None else min(steps, int(max_steps))


class BudgetExhausted(RuntimeError):
    """Raised by :meth:`SitePrivacy.attach` when the round was not allowed."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class SitePrivacy:
    """A site's client-side DP over all rounds and restarts.

    Per round: ``plan_round`` (budget decision) -> if allowed
    ``train_local(..., engine=site.engine())`` (or ``attach`` and train with the returned
    :class:`PrivateTraining` by hand) -> ``finish`` -> save ``state_dict()`` in the site state.

    Parameters
    ----------
    cfg
        The run's DP settings.
    state
        What :meth:`state_dict` returned before (``None`` for a new site).
    """

    def __init__(self, cfg: DPConfig, state: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.accountant = SiteAccountant.from_state(
            None if state is None else state["accountant"], mechanism=cfg.accountant
        )
        self.noise_multiplier: float | None = None
        if cfg.noise_multiplier is not None:
            self.noise_multiplier = float(cfg.noise_multiplier)
        elif state is not None and state.get("noise_multiplier") is not None:
            self.noise_multiplier = float(state["noise_multiplier"])
        self._decision: BudgetDecision | None = None
        self._steps_before: int | None = None
        self._private: PrivateTraining | None = None

    # --- per round ---------------------------------------------------------------
    def plan_round(self, loader: DataLoader, steps: int | None = None) -> BudgetDecision:
        """Decide whether the next round's ``steps`` DP steps fit in the budget.

        On the first round with a target epsilon this also calibrates the noise
        multiplier for ``planned_rounds`` rounds of ``steps`` steps; it is kept in the
        state for all later rounds.

        Parameters
        ----------
        loader
            The plain training loader that :meth:`attach` will get.
        steps
            Optimizer steps the round will take; default one Poisson epoch
            (``len(loader)`` steps).
        """
        sample_rate = accounting_sample_rate(loader)
        if steps is None:
            steps = int(1 / sample_rate)
        if self.noise_multiplier is None:
            self.noise_multiplier = calibrate_noise_multiplier(
                self.cfg, sample_rate=sample_rate, steps_per_round=steps
            )
        self._decision = check_budget(
            self.accountant,
            budget=self.cfg.budget,
            delta=self.cfg.delta,
            noise_multiplier=self.noise_multiplier,
            sample_rate=sample_rate,
            steps=steps,
        )
        return self._decision

    def attach(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader | PatientPoissonLoader
    ) -> PrivateTraining:
        """Wrap the round's model, optimizer and loader (after an allowed ``plan_round``).

        A :class:`~mpdrm.privacy.patients.PatientPoissonLoader` makes the round patient-level
        DP-SGD (one clipped gradient per sampled patient); a plain ``DataLoader`` makes it
        record-level (one per clip).

        Raises
        ------
        BudgetExhausted
            If the last ``plan_round`` refused the round.
        RuntimeError
            If ``plan_round`` was not called first.
        """
        if self._decision is None or self.noise_multiplier is None:
            raise RuntimeError("call plan_round(loader, steps) before attach()")
        if not self._decision.allowed:
            raise BudgetExhausted(self._decision)
        generator = None
        if self.cfg.noise_seed is not None:
            seed = (int(self.cfg.noise_seed) * 1_000_003 + self.accountant.steps) % (2**63)
            generator = torch.Generator().manual_seed(seed)
        common = dict(accountant=self.accountant, noise_multiplier=self.noise_multiplier,
                      max_grad_norm=self.cfg.max_grad_norm, grad_sample_mode=self.cfg.grad_sample_mode,
                      noise_generator=generator)
        if isinstance(loader, PatientPoissonLoader):
            if self.cfg.secure_mode:
                raise ValueError("secure_mode is not available with patient-level DP (dp.unit=patient)")
            private = make_patient_private(model, optimizer, loader, **common)
        else:
            private = make_private(model, optimizer, loader, secure_mode=self.cfg.secure_mode, **common)
        if private.sample_rate != self._decision.sample_rate:
            raise RuntimeError(
                f"the loader's sample rate {private.sample_rate} differs from the planned "
                f"{self._decision.sample_rate}; plan and attach with the same loader"
            )
        self._steps_before = self.accountant.steps
        self._private = private
        return private

    def engine(self) -> PrivateEngine:
        """The round's ``engine`` for ``mpdrm.training.train_local``: it builds the optimizer,
        :meth:`attach`-es (after an allowed ``plan_round``), steps with DP-SGD and unwraps.

        Call :meth:`finish` after ``train_local`` for the round's report.
        """
        return PrivateEngine(self.attach)

    def finish(self, private: PrivateTraining | None = None) -> dict[str, Any]:
        """Close the round: unwrap the model and report what the round spent.

        ``private`` defaults to the round's last :meth:`attach` (also the one an
        :meth:`engine` made); closing an already closed round does nothing more.

        Returns
        -------
        dict
            ``{"epsilon", "steps_round", "steps"}``. Warns if more steps were taken than
            planned (the epsilon may then exceed the budget).
        """
        private = private if private is not None else self._private
        if private is None:
            raise RuntimeError("finish() without an attached round")
        private.close()
        self._private = None
        steps_round = self.accountant.steps - (self._steps_before or 0)
        planned = self._decision.steps_next if self._decision is not None else steps_round
        if steps_round > planned:
            warnings.warn(
                f"the round took {steps_round} DP steps but {planned} were planned; "
                "the budget check did not cover the extra steps",
                stacklevel=2,
            )
        self._decision = None
        self._steps_before = None
        return {"epsilon": self.epsilon(), "steps_round": steps_round, "steps": self.accountant.steps}

    # --- reporting and persistence -----------------------------------------------
    def epsilon(self) -> float:
        """Epsilon spent by the site so far at the configured delta."""
        return self.accountant.epsilon(self.cfg.delta)

    def totals(self) -> dict[str, Any]:
        """``{"noise_multiplier", "sample_rate", "steps", "delta", "epsilon", ...}``."""
        return self.accountant.totals(self.cfg.delta)

    def state_dict(self) -> dict[str, Any]:
        """Plain data to keep in the site's saved state (picklable and JSON-able)."""
        return {
            "version": STATE_VERSION,
            "accountant": self.accountant.state_dict(),
            "noise_multiplier": self.noise_multiplier,
            "delta": self.cfg.delta,
        }
