"""Each aggregation rule, DP wrapper composition, optimizer state, a full start()."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)

from strategies import (
    AGGREGATORS,
    PersonalizedStrategy,
    aggregator_state,
    build_strategy,
    load_aggregator_state,
)
from tests.federation.message_helpers import LocalGrid, arrayrecord, reply

SHARED = {"depression.conv.weight": (4, 3), "rarm.head.bias": (3,)}
NAMES = list(SHARED)

pytestmark = pytest.mark.timeout(30)
OPTIONS = {
    "fedavg": {},
    "fedadam": {"eta": 0.1},
    "fedyogi": {"eta": 0.1},
    "fedavgm": {"server_momentum": 0.9},
    "fedprox": {"proximal-mu": 0.05},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
}


def global_arrays() -> dict[str, np.ndarray]:
    """The current global arrays: all zeros."""
    return {name: np.zeros(shape, np.float32) for name, shape in SHARED.items()}


def site_arrays(site: int) -> dict[str, np.ndarray]:
    """Each site's update: all elements equal to site + 1."""
    return {name: np.full(shape, site + 1.0, np.float32) for name, shape in SHARED.items()}


def grid_of(sites: int) -> LocalGrid:
    """A grid whose node ``100 + s`` trains as site ``s``."""

    def handler(site: int):
        def answer(message: Message) -> Message:
            if message.metadata.message_type == MessageType.TRAIN:
                return Message(
                    RecordDict(
                        {
                            "arrays": arrayrecord(site_arrays(site)),
                            "metrics": MetricRecord(
                                {"num-examples": 10, "site-id": site, "train-loss": 0.5}
                            ),
                        }
                    ),
                    reply_to=message,
                )
            return Message(
                RecordDict(
                    {"metrics": MetricRecord({"num-examples": 5, "site-id": site, "rmse": 0.1 * site})}
                ),
                reply_to=message,
            )

        return answer

    return LocalGrid({100 + s: handler(s) for s in range(sites)})


def one_round(strategy, sites: int = 5):
    """configure_train + aggregate_train of round 1 on ``sites`` synthetic sites."""
    grid = grid_of(sites)
    messages = strategy.configure_train(1, arrayrecord(global_arrays()), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    return list(messages), strategy.aggregate_train(1, replies)


@pytest.mark.parametrize("rule", sorted(AGGREGATORS))
def test_each_rule_runs_one_round(rule: str) -> None:
    strategy = build_strategy(rule, NAMES, min_train_nodes=5, min_available_nodes=5, **OPTIONS[rule])
    messages, (arrays, metrics) = one_round(strategy)
    assert len(messages) == 5
    assert list(arrays.keys()) == NAMES
    values = {name: arrays[name].numpy() for name in NAMES}
    for name, value in values.items():
        assert value.shape == SHARED[name] and value.dtype == np.float32
        assert np.isfinite(value).all()
    bias = values["rarm.head.bias"]
    if rule in ("fedavg", "fedprox", "fedavgm"):  # equal weights: mean of 1..5
        np.testing.assert_allclose(bias, 3.0, rtol=1e-6)
    if rule in ("fedmedian", "fedtrimmedavg"):  # median / mean of 2..4
        np.testing.assert_allclose(bias, 3.0, rtol=1e-6)
    if rule in ("fedadam", "fedyogi"):  # one server step from 0 toward the mean
        assert (bias > 0).all() and (bias < 3.0).all()
    if rule == "fedprox":
        assert messages[0].content["config"]["proximal-mu"] == 0.05
    assert metrics["train-loss"] == pytest.approx(0.5)


def test_robust_rules_resist_an_outlier_site() -> None:
    for rule, expected in (("fedmedian", 3.0), ("fedtrimmedavg", 3.0)):
        strategy = build_strategy(rule, NAMES, **OPTIONS[rule])
        strategy.configure_train(1, arrayrecord(global_arrays()), ConfigRecord(), grid_of(5))
        replies = [
            reply(100 + s, site_arrays(s) if s != 4 else {n: np.full(SHARED[n], 1e6, np.float32) for n in NAMES},
                  {"num-examples": 10, "site-id": s})
            for s in range(5)
        ]
        arrays, _ = strategy.aggregate_train(1, replies)
        np.testing.assert_allclose(arrays["rarm.head.bias"].numpy(), expected, rtol=1e-6)


def test_factory_rejects_unknown_rule_and_option() -> None:
    with pytest.raises(ValueError, match="unknown aggregation rule 'fedfoo'"):
        build_strategy("fedfoo", NAMES)
    with pytest.raises(ValueError, match=r"\['proximal_mu'\] not accepted by FedAvg"):
        build_strategy("fedavg", NAMES, proximal_mu=0.1)


def test_server_optimizer_keeps_global_dtype_over_rounds() -> None:
    """Flower's FedAdam promotes float32 to float64; the strategy casts back."""
    strategy = build_strategy("fedadam", NAMES, min_train_nodes=3, min_available_nodes=3)
    grid = grid_of(3)
    current = arrayrecord(global_arrays())
    for rnd in (1, 2, 3):
        replies = grid.send_and_receive(strategy.configure_train(rnd, current, ConfigRecord(), grid))
        current, _ = strategy.aggregate_train(rnd, replies)
        assert {current[n].dtype for n in NAMES} == {"float32"}
    assert not strategy.rejections


def test_resume_with_saved_optimizer_state_is_bit_identical() -> None:
    def build() -> PersonalizedStrategy:
        return build_strategy("fedavgm", NAMES, min_train_nodes=3, min_available_nodes=3,
                              server_momentum=0.9, server_learning_rate=0.5)

    def step(strategy, rnd, current, grid):
        replies = grid.send_and_receive(strategy.configure_train(rnd, current, ConfigRecord(), grid))
        return strategy.aggregate_train(rnd, replies)[0]

    grid = grid_of(3)
    straight = build()
    current = arrayrecord(global_arrays())
    for rnd in (1, 2, 3):
        current = step(straight, rnd, current, grid)

    first = build()
    resumed_from = step(first, 1, arrayrecord(global_arrays()), grid)
    state = aggregator_state(first)
    second = build()
    load_aggregator_state(second, state)
    resumed = resumed_from
    for rnd in (2, 3):
        resumed = step(second, rnd, resumed, grid)

    for name in NAMES:
        assert resumed[name].numpy().tobytes() == current[name].numpy().tobytes()
    assert [s["class"] for s in state] == ["PersonalizedStrategy", "FedAvgM"]
    with pytest.raises(ValueError, match="does not match"):
        load_aggregator_state(build_strategy("fedavg", NAMES), state)


# ------------------------------------------------------------------------- DP
@pytest.mark.dp
def test_dp_fixed_clipping_wraps_the_personalized_strategy() -> None:
    clip = 0.5
    inner = build_strategy("fedavg", NAMES, min_train_nodes=3, min_available_nodes=3)
    strategy = DifferentialPrivacyServerSideFixedClipping(
        inner, noise_multiplier=0.0, clipping_norm=clip, num_sampled_clients=3
    )
    _, (arrays, metrics) = one_round(strategy, sites=3)
    # Each site's update (all elements s+1) is clipped to norm 0.5, same direction:
    # the average is the all-equal vector of norm 0.5 (noise multiplier 0).
    flat = np.concatenate([arrays[n].numpy().ravel() for n in NAMES])
    assert np.linalg.norm(flat) == pytest.approx(clip, rel=1e-5)
    np.testing.assert_allclose(flat, flat[0], rtol=1e-6)
    assert not inner.rejections and inner.rounds[1].aggregated
    assert metrics["num-sites"] == 3


@pytest.mark.dp
def test_dp_inside_validation_never_sees_a_leaking_reply() -> None:
    clip = 0.5
    strategy = build_strategy(
        "fedavg",
        NAMES,
        min_train_nodes=2,
        wrap_aggregator=lambda s: DifferentialPrivacyServerSideFixedClipping(
            s, noise_multiplier=0.0, clipping_norm=clip, num_sampled_clients=2
        ),
    )
    strategy.configure_train(1, arrayrecord(global_arrays()), ConfigRecord(), grid_of(3))
    leak = {**site_arrays(2), "personality.proj.weight": np.ones(2, np.float32)}
    replies = [
        reply(100, site_arrays(0), {"num-examples": 10, "site-id": 0}),
        reply(102, leak, {"num-examples": 10, "site-id": 2}),
        reply(101, site_arrays(1), {"num-examples": 10, "site-id": 1}),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert [r.site_id for r in strategy.rejections] == [2]
    flat = np.concatenate([arrays[n].numpy().ravel() for n in NAMES])
    assert np.linalg.norm(flat) == pytest.approx(clip, rel=1e-5)


@pytest.mark.dp
def test_dp_adaptive_clipping_wraps_the_personalized_strategy() -> None:
    inner = build_strategy("fedavg", NAMES, min_train_nodes=3, min_available_nodes=3)
    strategy = DifferentialPrivacyServerSideAdaptiveClipping(
        inner, noise_multiplier=0.0, num_sampled_clients=3, initial_clipping_norm=0.5
    )
    _, (arrays, _) = one_round(strategy, sites=3)
    assert arrays is not None and inner.rounds[1].aggregated
    assert aggregator_state(strategy)[0]["clipping_norm"] != 0.5  # geometric update


# -------------------------------------------------------------- Flower start()
def test_flower_start_runs_rounds_and_logs_summary() -> None:
    strategy = build_strategy("fedavg", NAMES, min_train_nodes=3, min_evaluate_nodes=3,
                              min_available_nodes=3)
    grid = grid_of(3)
    result = strategy.start(grid, arrayrecord(global_arrays()), num_rounds=2)
    np.testing.assert_allclose(result.arrays["rarm.head.bias"].numpy(), 2.0)
    assert sorted(strategy.rounds) == [1, 2]
    entry = strategy.rounds[2].to_dict()
    model_bytes = arrayrecord(global_arrays()).count_bytes()
    assert entry["bytes_down"] == 6 * model_bytes  # 3 train + 3 evaluate instructions
    assert sum(strategy.rounds[r].bytes_down for r in (1, 2)) == sum(
        m.content["arrays"].count_bytes() for m in grid.sent
    )
    assert set(entry["train"]["per_site"]) == {"0", "1", "2"}
    assert entry["eval"]["rmse"] == pytest.approx(0.1)
    assert entry["bytes_up"] == 3 * model_bytes  # evaluate replies carry no arrays
    assert result.evaluate_metrics_clientapp[2]["rmse"] == pytest.approx(0.1)
    sent_names = {name for m in grid.sent for name in m.content["arrays"].keys()}
    assert sent_names == set(NAMES)


def test_plain_fedavg_aggregator_is_reachable() -> None:
    strategy = PersonalizedStrategy(
        FedAvg(min_train_nodes=1, min_available_nodes=1), NAMES, min_train_nodes=1
    )
    _, (arrays, _) = one_round(strategy, sites=1)
    np.testing.assert_allclose(arrays["rarm.head.bias"].numpy(), 1.0)
