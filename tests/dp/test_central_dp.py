"""Central DP (dp.mode=central): the strategy the server builds clips each site's update,
averages uniformly, adds noise, and accounts epsilon in a way that survives a checkpoint."""
from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from server.central_dp import central_dp_round, central_settings
from server.dp_accountant import ORDERS, no_amplification_accountant
from server.strategy import capture_state, make_strategy, restore_state
from tests.federation.message_helpers import LocalGrid, arrayrecord, reply

pytestmark = pytest.mark.dp

NAMES = ["depression.w", "rarm.b"]


def _cfg(**dp) -> dict:
    return {"mode": "mpdrm", "min-sites": 2, "fraction-train": 1.0, "fraction-evaluate": 1.0,
            "strategy.aggregation": "fedavg", "dp.mode": "central", **dp}


def _round(strategy, updates: dict[int, tuple[np.ndarray, int]], server_round: int = 1):
    current = arrayrecord({"depression.w": np.zeros(3, np.float32), "rarm.b": np.zeros(1, np.float32)})
    grid = LocalGrid({node: None for node in updates})
    list(strategy.configure_train(server_round, current, ConfigRecord({}), grid))
    replies = [reply(node, {"depression.w": vec[:3], "rarm.b": vec[3:]}, {"num-examples": n, "site-id": node})
               for node, (vec, n) in updates.items()]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return np.concatenate([arrays["depression.w"].numpy(), arrays["rarm.b"].numpy()])


def test_clipped_uniform_mean_without_noise() -> None:
    strategy = make_strategy(_cfg(**{"dp.noise_multiplier": 0.0, "dp.clipping_norm": 1.0}), NAMES)
    big = np.array([30.0, 0.0, 0.0, 40.0], np.float32)      # norm 50 -> clipped to 1
    small = np.array([0.0, 0.3, 0.0, 0.0], np.float32)      # norm 0.3 -> kept
    out = _round(strategy, {1: (big, 1000), 2: (small, 1)})
    # uniform over sites (not weighted by examples), each update clipped to norm 1
    np.testing.assert_allclose(out, (big / 50.0 + small) / 2, atol=1e-6)


def test_noise_and_accounted_epsilon_per_round_survive_a_checkpoint() -> None:
    cfg = _cfg(**{"dp.noise_multiplier": 2.0, "dp.clipping_norm": 0.5, "dp.delta": 1e-5})
    strategy = make_strategy(cfg, NAMES)
    vec = np.ones(4, np.float32)
    out = _round(strategy, {1: (vec, 5), 2: (vec, 7)})
    assert not np.allclose(out, np.full(4, 0.25))  # clipped mean is 0.25 each; noise moved it
    first = central_dp_round(strategy)
    assert first["releases"] == 1 and first["epsilon"] > 0 and first["delta"] == 1e-5

    # independent RDP of the Gaussian mechanism (alpha / (2 sigma^2) per release) with the
    # Balle et al. (2020) conversion; the accountant must agree after two releases
    _round(strategy, {1: (vec, 5), 2: (vec, 7)}, server_round=2)
    alphas = np.array(ORDERS)
    rdp = 2 * alphas / (2 * 2.0**2)
    eps = rdp + np.log1p(-1 / alphas) - (np.log(1e-5) + np.log(alphas)) / (alphas - 1)
    second = central_dp_round(strategy)
    assert second["releases"] == 2
    assert second["epsilon"] == pytest.approx(float(np.nanmin(eps)), rel=1e-6)

    rebuilt = make_strategy(cfg, NAMES)
    restore_state(rebuilt, capture_state(strategy))
    assert central_dp_round(rebuilt)["epsilon"] == pytest.approx(second["epsilon"])


def test_settings_are_checked() -> None:
    assert central_settings({"dp.mode": "none"}) is None
    with pytest.raises(ValueError, match="noise_multiplier"):
        central_settings({"dp.mode": "central"})
    with pytest.raises(ValueError, match="target_epsilon"):
        central_settings({"dp.mode": "central", "dp.noise_multiplier": 1.0, "dp.target_epsilon": 4.0})
    with pytest.raises(ValueError, match="fedavg or fedprox"):
        make_strategy({**_cfg(**{"dp.noise_multiplier": 1.0}), "strategy.aggregation": "fedmedian"}, NAMES)
    adaptive = make_strategy(_cfg(**{"dp.noise_multiplier": 1.0, "dp.adaptive": True, "dp.clipped_count_stddev": 1.0}), NAMES)
    assert central_dp_round(adaptive)["adaptive"] is True and "epsilon" not in central_dp_round(adaptive)


def test_accountant_delta_and_budget_check_agree() -> None:
    acct = no_amplification_accountant(delta=1e-5, num_sites=3)
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    event = GaussianPrivacyEvent(noise_multiplier=1.5, sample_size=3, population_size=3)
    acct.compose(event, count=3)
    eps = acct.get_epsilon(1e-5)
    assert math.isfinite(eps) and acct.get_delta(eps) <= 1.01e-5
    assert acct.would_exceed(event, max_epsilon=eps) and not acct.would_exceed(event, max_epsilon=eps * 10)
