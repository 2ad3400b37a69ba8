"""Budget enforcement: may a site train its next round without passing its epsilon limit?"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .accounting import SiteAccountant


@dataclass(frozen=True)
class BudgetDecision:
    """The answer to 'may this site train the next round?', with the numbers.

    Attributes
    ----------
    allowed
        True when the round's steps keep epsilon within the budget.
    reason
        One human-readable line (what a refusing client sends back).
    epsilon_spent
        Epsilon already spent before the round.
    epsilon_after
        Epsilon after the round's steps (exact look-ahead with the site's accountant).
    epsilon_budget
        The limit (``inf`` when unlimited).
    delta, noise_multiplier, sample_rate
        Parameters of the look-ahead.
    steps_spent, steps_next
        Steps already taken, and steps the round would take.
    """

    allowed: bool
    reason: str
    epsilon_spent: float
    epsilon_after: float
    epsilon_budget: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps_spent: int
    steps_next: int

    def to_metrics(self) -> dict[str, float | int]:
        """Flat numeric dict (e.g. for a Flower MetricRecord); ``reason`` left out."""
        out = {k: v for k, v in asdict(self).items() if k != "reason"}
        out["allowed"] = int(self.allowed)
        return out


def check_budget(
    accountant: SiteAccountant,
    *,
    budget: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
) -> BudgetDecision:
    """Decide, before training, whether ``steps`` more steps fit in ``budget``.

    Parameters
    ----------
    accountant
        The site's ledger (restored from its saved state).
    budget
        Epsilon limit; ``math.inf`` allows everything.
    delta, noise_multiplier, sample_rate, steps
        The round's planned DP-SGD steps.
    """
    spent = accountant.epsilon(delta)
    after = accountant.epsilon_after(
        delta, noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps
    )
    allowed = after <= budget
    numbers = (
        f"epsilon spent {spent:.4g}, after this round {after:.4g}, budget {budget:.4g} "
        f"(delta {delta:g}, noise multiplier {noise_multiplier:.4g}, sample rate {sample_rate:.4g}, "
        f"{accountant.steps} steps done, {steps} planned)"
    )
    if allowed:
        reason = "within budget: " + numbers
    elif math.isinf(after) and noise_multiplier == 0:
        reason = "budget exhausted: zero noise gives no finite epsilon; " + numbers
    else:
        reason = "budget exhausted: training this round would exceed the site's epsilon budget; " + numbers
    return BudgetDecision(
        allowed=allowed,
        reason=reason,
        epsilon_spent=spent,
        epsilon_after=after,
        epsilon_budget=float(budget),
        delta=float(delta),
        noise_multiplier=float(noise_multiplier),
        sample_rate=float(sample_rate),
        steps_spent=accountant.steps,
        steps_next=int(steps),
    )
