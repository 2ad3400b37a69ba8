"""Budget enforcement: a site stops at the round that would pass its epsilon budget."""
from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant

from mpdrm.privacy import BudgetExhausted, DPConfig, SitePrivacy, check_budget, SiteAccountant

pytestmark = pytest.mark.dp

DELTA = 1e-5


def eps_rdp(noise: float, q: float, steps: int) -> float:
    acct = RDPAccountant()
    acct.history = [(noise, q, steps)]
    return acct.get_epsilon(delta=DELTA)


def test_training_stops_at_the_right_round(make_model, loader, train_round):
    noise, q, per_round = 1.0, 1 / len(loader), len(loader)
    # independent: the budget lies strictly between 3 and 4 rounds' epsilon
    e3, e4 = eps_rdp(noise, q, 3 * per_round), eps_rdp(noise, q, 4 * per_round)
    budget = (e3 + e4) / 2
    cfg = DPConfig(noise_multiplier=noise, epsilon_budget=budget, delta=DELTA, accountant="rdp")

    state, trained, refusal = None, [], None
    for rnd in range(1, 7):
        site = SitePrivacy(cfg, state=state)  # fresh objects each round, like a restarted site
        decision = site.plan_round(loader)
        if not decision.allowed:
            refusal = (rnd, decision)
            with pytest.raises(BudgetExhausted):
                site.attach(make_model(), torch.optim.SGD(make_model().parameters(), lr=0.1), loader)
            break
        model = make_model(seed=rnd)
        private = site.attach(model, torch.optim.SGD(model.parameters(), lr=0.05), loader)
        train_round(private)
        site.finish(private)
        trained.append(rnd)
        state = site.state_dict()

    assert trained == [1, 2, 3]
    assert refusal is not None and refusal[0] == 4
    decision = refusal[1]
    assert "budget exhausted" in decision.reason
    assert decision.epsilon_spent == pytest.approx(e3) and decision.epsilon_spent <= budget
    assert decision.epsilon_after == pytest.approx(e4) and decision.epsilon_after > budget
    assert decision.steps_spent == 3 * per_round and decision.steps_next == per_round
    metrics = decision.to_metrics()
    assert metrics["allowed"] == 0 and all(isinstance(v, (int, float)) for v in metrics.values())


def test_target_epsilon_fits_exactly_the_planned_rounds():
    """Noise calibrated to (epsilon, delta) over the planned rounds; one more is refused."""
    cfg = DPConfig(target_epsilon=3.0, planned_rounds=4, delta=DELTA, accountant="rdp")
    loader = torch.utils.data.DataLoader(list(range(40)), batch_size=5)  # q = 1/8, 8 steps/round
    steps = 5  # a round trains 5 steps (e.g. a local step cap)
    site = SitePrivacy(cfg)
    allowed = 0
    for _ in range(10):
        decision = site.plan_round(loader, steps=steps)
        if not decision.allowed:
            break
        allowed += 1
        for _ in range(steps):  # the accountant records the DP steps, as DPOptimizer would
            site.accountant.accountant.step(noise_multiplier=site.noise_multiplier, sample_rate=1 / 8)
    assert allowed == 4
    spent = site.epsilon()
    assert spent <= 3.0 and spent > 3.0 - 0.05
    assert spent == pytest.approx(eps_rdp(site.noise_multiplier, 1 / 8, 4 * steps))
    # the calibrated noise survives a restart (not recalibrated on another round length)
    restored = SitePrivacy(cfg, state=site.state_dict())
    assert restored.noise_multiplier == site.noise_multiplier
    assert not restored.plan_round(loader, steps=1).allowed


def test_unlimited_without_budget_and_attach_requires_a_plan(model, loader):
    cfg = DPConfig(noise_multiplier=0.8)
    site = SitePrivacy(cfg)
    with pytest.raises(RuntimeError, match="plan_round"):
        site.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), loader)
    assert cfg.budget == float("inf")
    assert site.plan_round(loader, steps=50).allowed


def test_zero_noise_is_refused_under_a_budget():
    decision = check_budget(SiteAccountant(), budget=8.0, delta=DELTA, noise_multiplier=0.0,
                            sample_rate=0.1, steps=1)
    assert not decision.allowed and "zero noise" in decision.reason
