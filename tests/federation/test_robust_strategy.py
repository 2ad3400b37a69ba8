"""Bounded influence of one site in the personalised strategy, with real Flower Messages:
every aggregator, central DP, reply order, the round log and its checkpoint round trip."""
from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import ConfigRecord

from mpdrm import tensorfile
from mpdrm.contract.runconfig import merged
from server.strategy import capture_state, make_strategy, restore_state
from server.summary import round_entry
from strategies import AGGREGATORS, PersonalizedStrategy, RobustConfig, build_strategy
from tests.federation.message_helpers import LocalGrid, arrayrecord, reply

SHARED = {"depression.conv.weight": (4, 3), "rarm.head.bias": (3,), "head.fc.weight": (2, 5)}
NAMES = list(SHARED)
ATTACKER = 2

pytestmark = pytest.mark.timeout(60)


def global_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHARED.items()}


def site_arrays(site: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The global record plus a small site-specific update, the update times ``scale``."""
    rng = np.random.default_rng(100 + site)
    glob = global_arrays()
    return {name: (glob[name] + scale * rng.normal(0, 0.01, glob[name].shape)).astype(np.float32) for name in glob}


def replies(attacked: bool, order: list[int] | None = None) -> list:
    out = []
    for site in order or [0, 1, 2, 3]:
        scale = 100.0 if attacked and site == ATTACKER else 1.0
        out.append(reply(100 + site, site_arrays(site, scale), {"num-examples": 10 + site, "site-id": site}))
    return out


def configured(strategy: PersonalizedStrategy, rnd: int = 1) -> PersonalizedStrategy:
    grid = LocalGrid({100 + i: None for i in range(4)})  # type: ignore[misc]
    list(strategy.configure_train(rnd, arrayrecord(global_arrays()), ConfigRecord(), grid))
    return strategy


def aggregate(strategy: PersonalizedStrategy, messages: list, rnd: int = 1) -> dict[str, np.ndarray]:
    arrays, _ = strategy.aggregate_train(rnd, messages)
    assert arrays is not None
    return {name: array.numpy() for name, array in arrays.items()}


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((a[k].astype(np.float64) - b[k]) ** 2) for k in a)))


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@pytest.mark.parametrize("trim", [0.0, 0.25])
def test_every_aggregator_runs_with_it_and_flags_the_x100_site(name: str, trim: float) -> None:
    robust = RobustConfig("median", 2.0, trim)
    clean = aggregate(configured(build_strategy(name, NAMES, min_train_nodes=2)), replies(False))
    plain = aggregate(configured(build_strategy(name, NAMES, min_train_nodes=2)), replies(True))
    strategy = configured(build_strategy(name, NAMES, min_train_nodes=2, robust=robust))
    bounded = aggregate(strategy, replies(True))
    for array in bounded.values():
        assert array.dtype == np.float32 and np.isfinite(array).all()
    report = strategy.rounds[1].robust
    assert report is not None and report["flagged"] == [ATTACKER]
    info = report["per_site"][ATTACKER]
    assert info["bounded"] and info["norm"] > 40 * report["bound"]
    assert report["bound"] == pytest.approx(2.0 * report["median_norm"])
    if trim:  # trimming acts on the bounded updates: the attacker is still the most trimmed
        fractions = {site: v["trimmed_fraction"] for site, v in report["per_site"].items()}
        assert max(fractions, key=fractions.get) == ATTACKER and report["trimmed_per_side"] == 1
    # robust keeps the aggregate near the clean one wherever the rule itself does not
    assert distance(bounded, clean) <= distance(plain, clean) + 1e-6
    if name not in ("fedmedian", "fedtrimmedavg"):  # their own rule already resists one x100 site
        assert distance(bounded, clean) < 0.2 * distance(plain, clean)


def test_trimmed_mean_alone_flags_the_x100_site_as_trimmed() -> None:
    strategy = configured(build_strategy("fedavg", NAMES, robust=RobustConfig("", None, 0.25)))
    result = aggregate(strategy, replies(True))
    report = strategy.rounds[1].robust
    info = report["per_site"][ATTACKER]
    assert report["bound"] is None and not info["bounded"] and info["scale"] == 1.0
    assert info["trimmed"] and info["trimmed_fraction"] > 0.9 and report["flagged"] == [ATTACKER]
    glob = global_arrays()
    for name, array in result.items():  # per coordinate: the mean of the two middle updates of four
        updates = np.sort(np.stack([site_arrays(s, 100.0 if s == ATTACKER else 1.0)[name].astype(np.float64)
                                    - glob[name] for s in range(4)]), axis=0)
        np.testing.assert_allclose(array, glob[name] + updates[1:3].mean(axis=0), rtol=1e-6, atol=1e-7)


def test_fedavg_aggregate_is_the_weighted_mean_of_the_bounded_replies() -> None:
    strategy = configured(build_strategy("fedavg", NAMES, robust=RobustConfig("fixed", 0.1)))
    result = aggregate(strategy, replies(True))
    report = strategy.rounds[1].robust
    glob = global_arrays()
    expected = {name: np.zeros(shape) for name, shape in SHARED.items()}
    weights = [10 + s for s in range(4)]
    for site in range(4):
        arrays = site_arrays(site, 100.0 if site == ATTACKER else 1.0)
        scale = report["per_site"][site]["scale"]
        for name in expected:
            update = arrays[name].astype(np.float64) - glob[name]
            bounded = (glob[name].astype(np.float64) + scale * update).astype(np.float32)
            expected[name] += weights[site] * bounded.astype(np.float64) / sum(weights)
    assert report["bound"] == 0.1 and report["flagged"] == [ATTACKER]
    for name in expected:
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-6, atol=1e-7)
    # sites within the bound are reported, not flagged
    assert all(not report["per_site"][s]["bounded"] for s in (0, 1, 3))


@pytest.mark.parametrize("trim", [0.0, 0.25])
def test_aggregate_is_independent_of_reply_order(trim: float) -> None:
    results = []
    for seed in range(4):
        order = [0, 1, 2, 3]
        random.Random(seed).shuffle(order)
        strategy = configured(build_strategy("fedadam", NAMES, robust=RobustConfig("median", 1.0, trim)))
        results.append((aggregate(strategy, replies(True, order)), strategy.rounds[1].robust))
    for arrays, report in results[1:]:
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], results[0][0][name])
        assert report == results[0][1]


def test_no_site_bounded_gives_the_plain_aggregate_bit_for_bit() -> None:
    plain = aggregate(configured(build_strategy("fedavg", NAMES)), replies(False))
    strategy = configured(build_strategy("fedavg", NAMES, robust=RobustConfig("fixed", 1e6)))
    same = aggregate(strategy, replies(False))
    for name in plain:
        np.testing.assert_array_equal(same[name], plain[name])
    assert strategy.rounds[1].robust["flagged"] == []


def _run_config(**extra) -> dict:
    return merged({"strategy.robust": "median", "min-sites": 2, **extra})


def test_central_dp_composes_with_a_fixed_bound_and_refuses_the_others() -> None:
    cfg = _run_config(**{"strategy.robust": "fixed", "strategy.robust_bound": 0.1, "dp.mode": "central",
                         "dp.noise_multiplier": 0.0, "dp.clipping_norm": 10.0, "dp.num_sampled_clients": 4})
    strategy = configured(make_strategy(cfg, NAMES))
    result = aggregate(strategy, replies(True))
    glob = global_arrays()
    # uniform mean of the bounded updates (Flower's clipping at 10 changes nothing, no noise)
    report = strategy.rounds[1].robust
    assert report["flagged"] == [ATTACKER]
    for name in result:
        updates = [report["per_site"][s]["scale"] * (site_arrays(s, 100.0 if s == ATTACKER else 1.0)[name]
                                                     .astype(np.float64) - glob[name]) for s in range(4)]
        np.testing.assert_allclose(result[name], glob[name] + np.mean(updates, axis=0), rtol=1e-5, atol=1e-6)
    for bad in ({"strategy.robust": "median"}, {"strategy.robust": "fixed", "strategy.robust_bound": 1.0,
                                                "strategy.robust_trim": 0.25}):
        with pytest.raises(ValueError, match="only strategy.robust=fixed"):
            make_strategy(_run_config(**{"dp.mode": "central", "dp.noise_multiplier": 1.0, **bad}), NAMES)


def test_fedavg_full_mode_carries_it_too() -> None:
    strategy = make_strategy(_run_config(mode="fedavg_full"), NAMES)
    assert strategy.robust is not None and strategy.local_prefix is None
    assert make_strategy(merged({"min-sites": 2}), NAMES).robust is None  # off by default


def test_round_log_report_survives_a_checkpoint_and_reaches_the_summary() -> None:
    strategy = configured(make_strategy(_run_config(**{"strategy.robust_trim": 0.25}), NAMES))
    aggregate(strategy, replies(True))
    state = tensorfile.loads(tensorfile.dumps(capture_state(strategy)))  # the checkpoint's own encoding
    fresh = make_strategy(_run_config(**{"strategy.robust_trim": 0.25}), NAMES)
    restore_state(fresh, state)
    assert fresh.rounds[1].robust == strategy.rounds[1].robust
    assert fresh.rounds[1].to_dict() == strategy.rounds[1].to_dict()
    entry = round_entry(strategy.rounds[1].to_dict(), {str(ATTACKER): "site-03", "0": "site-01"})
    robust = entry["robust"]
    assert robust["flagged"] == ["site-03"]
    assert set(robust["per_site"]) == {"site-01", "1", "site-03", "3"}
    assert robust["per_site"]["site-03"]["norm"] > robust["bound"] and robust["mode"] == "median"
    # a log without the report (robust off, or an older checkpoint) has no "robust" key
    plain = configured(make_strategy(merged({"min-sites": 2}), NAMES))
    aggregate(plain, replies(False))
    assert "robust" not in plain.rounds[1].to_dict()
    old_state = {k: v for k, v in plain.rounds[1].to_state().items() if k != "robust"}
    assert type(plain.rounds[1]).from_state(old_state).robust is None
