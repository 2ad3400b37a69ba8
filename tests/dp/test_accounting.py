"""Epsilon: equal to an independent accountant, cumulative over rounds and restarts."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from opacus.accountants import PRVAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from mpdrm import tensorfile
from mpdrm.privacy import DPConfig, SiteAccountant, SitePrivacy, make_private

pytestmark = pytest.mark.dp

DELTA = 1e-5


def independent_epsilon(mechanism: str, noise: float, q: float, steps: int, delta: float) -> float:
    """Epsilon computed here, from the analysis functions, not through the library."""
    if mechanism == "rdp":
        orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
        rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=noise, steps=steps, orders=orders)
        eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
        return float(eps)
    acct = PRVAccountant()
    acct.history = [(noise, q, steps)]
    return float(acct.get_epsilon(delta=delta))


@pytest.mark.parametrize("mechanism", ["prv", "rdp"])
def test_epsilon_after_known_steps_matches_independent_accountant(
    mechanism, model, loader, train_round
):
    acct = SiteAccountant(mechanism)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    private = make_private(model, opt, loader, accountant=acct, noise_multiplier=1.3, max_grad_norm=1.0)
    steps = train_round(private, epochs=2)
    private.close()
    assert steps == 2 * len(loader) == 6
    assert acct.steps == 6
    q = loader.batch_size / len(loader.dataset)  # 4 / 12
    assert private.sample_rate == pytest.approx(q)
    expected = independent_epsilon(mechanism, 1.3, q, 6, DELTA)
    assert acct.epsilon(DELTA) == pytest.approx(expected, rel=1e-6)
    totals = acct.totals(DELTA)
    assert totals["steps"] == 6 and totals["noise_multiplier"] == 1.3
    assert totals["sample_rate"] == pytest.approx(q) and totals["delta"] == DELTA
    assert independent_epsilon(mechanism, totals["noise_multiplier"], totals["sample_rate"],
                               totals["steps"], totals["delta"]) == pytest.approx(totals["epsilon"])


def test_lookahead_equals_epsilon_after_training(model, loader, train_round):
    acct = SiteAccountant("prv")
    q = 1 / len(loader)
    predicted = acct.epsilon_after(DELTA, noise_multiplier=1.1, sample_rate=q, steps=len(loader))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    private = make_private(model, opt, loader, accountant=acct, noise_multiplier=1.1, max_grad_norm=1.0)
    train_round(private)
    private.close()
    assert acct.epsilon(DELTA) == predicted


def _round(site: SitePrivacy, make_model, loader, train_round) -> dict:
    decision = site.plan_round(loader)
    assert decision.allowed, decision.reason
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    private = site.attach(model, opt, loader)
    train_round(private)
    return site.finish(private)


def test_epsilon_accumulates_over_rounds_and_survives_restart(
    tmp_path, make_model, loader, train_round
):
    cfg = DPConfig(noise_multiplier=1.2, max_grad_norm=1.0, delta=DELTA, accountant="prv")
    q, per_round = 1 / len(loader), len(loader)

    site = SitePrivacy(cfg)
    r1 = _round(site, make_model, loader, train_round)
    r2 = _round(site, make_model, loader, train_round)
    assert r1["steps"] == per_round and r2["steps"] == 2 * per_round
    assert r2["epsilon"] > r1["epsilon"] > 0
    assert r2["epsilon"] == pytest.approx(independent_epsilon("prv", 1.2, q, 2 * per_round, DELTA))

    state_file = tmp_path / "dp_state.json"
    state_file.write_text(json.dumps(site.state_dict()))
    tensorfile.save(tmp_path / "site_state.safetensors", {"dp": site.state_dict()})
    del site

    # a fresh object from the saved state: no reset
    restored = SitePrivacy(cfg, state=json.loads(state_file.read_text()))
    assert restored.epsilon() == r2["epsilon"]
    r3 = _round(restored, make_model, loader, train_round)
    assert r3["steps"] == 3 * per_round
    assert r3["epsilon"] == pytest.approx(independent_epsilon("prv", 1.2, q, 3 * per_round, DELTA))
    assert r3["epsilon"] > r2["epsilon"]

    # also through the site state's data-only file format (plain data only)
    loaded = tensorfile.load(tmp_path / "site_state.safetensors")
    assert SitePrivacy(cfg, state=loaded["dp"]).epsilon() == r2["epsilon"]

    # and in a new process
    code = textwrap.dedent(f"""
        import json
        from mpdrm.privacy import DPConfig, SitePrivacy
        cfg = DPConfig(noise_multiplier=1.2, max_grad_norm=1.0, delta={DELTA}, accountant="prv")
        site = SitePrivacy(cfg, state=json.load(open({str(state_file)!r})))
        print(json.dumps(site.totals()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    totals = json.loads(out.stdout.strip().splitlines()[-1])
    assert totals["epsilon"] == r2["epsilon"] and totals["steps"] == 2 * per_round


def test_state_of_another_mechanism_is_refused():
    acct = SiteAccountant("rdp")
    acct.accountant.step(noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(ValueError, match="same accountant"):
        SiteAccountant.from_state(acct.state_dict(), mechanism="prv")


def test_zero_noise_has_infinite_epsilon():
    acct = SiteAccountant()
    acct.accountant.step(noise_multiplier=0.0, sample_rate=0.1)
    assert acct.epsilon(DELTA) == float("inf")


def test_train_local_with_dp_hooks_accounts_every_step(make_model, loader):
    """The privacy layer plugs into mpdrm.training.train_local through its engine."""
    from mpdrm.training import TrainConfig, train_local

    from mpdrm.privacy import round_steps

    cfg = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=DELTA)
    train_cfg = TrainConfig(epochs=2, lr=1e-3, max_steps=5, device="cpu")
    site = SitePrivacy(cfg)
    steps = round_steps(loader, train_cfg.epochs, train_cfg.max_steps)
    assert steps == 5
    assert site.plan_round(loader, steps).allowed
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_local(model, loader, train_cfg, engine=site.engine())
    report = site.finish()
    assert result.steps == 5 and report["steps"] == 5 and report["steps_round"] == 5
    assert report["epsilon"] == pytest.approx(independent_epsilon("prv", 1.0, 1 / len(loader), 5, DELTA))
    assert list(model.state_dict()) == list(before)  # plain names again
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()
               if k.startswith("personality."))
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
