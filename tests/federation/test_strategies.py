"""PersonalizedStrategy: reply validation, weighted average, order, minimum, bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import ConfigRecord, MessageType, MetricRecord, RecordDict
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

from strategies import PersonalizedStrategy, build_strategy, select_shared
from tests.federation.message_helpers import (
    LocalGrid,
    arrayrecord,
    error_reply,
    reply,
)

SHARED = {"depression.conv.weight": (4, 3), "rarm.head.bias": (3,)}
NAMES = list(SHARED)

pytestmark = pytest.mark.timeout(30)


def arrays_filled(value: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Shared arrays, every element equal to ``value``."""
    return {name: np.full(shape, value, dtype=dtype) for name, shape in SHARED.items()}


def arrays_random(seed: int) -> dict[str, np.ndarray]:
    """Shared float32 arrays with seeded random values."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in SHARED.items()
    }


def train_reply(site: int, arrays: dict[str, np.ndarray], n: int = 10, **metrics):
    """A valid training reply from node ``100 + site``."""
    values = {"num-examples": n, "site-id": site, "train-loss": 1.0, **metrics}
    return reply(100 + site, arrays, values)


def configured(strategy: PersonalizedStrategy, nodes: int = 3, rnd: int = 1):
    """Run configure_train on a grid of ``nodes`` nodes; return the sent messages."""
    grid = LocalGrid({100 + i: None for i in range(nodes)})  # type: ignore[misc]
    return list(
        strategy.configure_train(rnd, arrayrecord(arrays_filled(0.0)), ConfigRecord(), grid)
    )


def fedavg(min_train: int = 2) -> PersonalizedStrategy:
    """A configured-once FedAvg personalised strategy."""
    strategy = build_strategy("fedavg", NAMES, min_train_nodes=min_train)
    configured(strategy)
    return strategy


# ------------------------------------------------------------------ validation
BAD_REPLIES = {
    "error": (lambda: error_reply(109, "site crashed"), "error reply", None),
    "leak": (
        lambda: train_reply(
            9, {**arrays_filled(1.0), "personality.proj.weight": np.ones(2, np.float32)}
        ),
        "site-local 'personality.*' tensor(s) that must never leave a site: "
        "personality.proj.weight",
        9,
    ),
    "outside": (
        lambda: train_reply(9, {**arrays_filled(1.0), "head.extra": np.ones(2, np.float32)}),
        "outside the shared list: head.extra",
        9,
    ),
    "missing-name": (
        lambda: train_reply(9, {"depression.conv.weight": np.ones((4, 3), np.float32)}),
        "shared name(s) missing: rarm.head.bias",
        9,
    ),
    "shape": (
        lambda: train_reply(
            9, {**arrays_filled(1.0), "rarm.head.bias": np.ones(4, np.float32)}
        ),
        "shape mismatch for 'rarm.head.bias': got (4,), expected (3,)",
        9,
    ),
    "dtype": (
        lambda: train_reply(9, arrays_filled(1.0, "float64")),
        "dtype mismatch for 'depression.conv.weight': got float64, expected float32",
        9,
    ),
    "nan": (
        lambda: train_reply(
            9, {**arrays_filled(1.0), "rarm.head.bias": np.array([0, np.nan, 0], np.float32)}
        ),
        "1 non-finite value(s) (NaN or Inf) in 'rarm.head.bias'",
        9,
    ),
    "inf": (
        lambda: train_reply(
            9, {**arrays_filled(1.0), "rarm.head.bias": np.array([np.inf] * 3, np.float32)}
        ),
        "3 non-finite value(s) (NaN or Inf)",
        9,
    ),
    "no-num-examples": (
        lambda: reply(109, arrays_filled(1.0), {"site-id": 9}),
        "missing 'num-examples'",
        9,
    ),
    "zero-num-examples": (
        lambda: train_reply(9, arrays_filled(1.0), n=0),
        "'num-examples' must be a positive number, got 0",
        9,
    ),
    "negative-num-examples": (
        lambda: train_reply(9, arrays_filled(1.0), n=-5),
        "'num-examples' must be a positive number, got -5",
        9,
    ),
    "no-site-id": (
        lambda: reply(109, arrays_filled(1.0), {"num-examples": 3}),
        "missing 'site-id'",
        None,
    ),
    "float-site-id": (
        lambda: reply(109, arrays_filled(1.0), {"num-examples": 3, "site-id": 9.5}),
        "'site-id' must be a non-negative int",
        None,
    ),
    "no-arrays": (
        lambda: reply(109, None, {"num-examples": 3, "site-id": 9}),
        "expected exactly one ArrayRecord, found 0",
        9,
    ),
    "no-metrics": (lambda: reply(109, arrays_filled(1.0), None), "MetricRecord", None),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_invalid_reply_is_rejected_with_its_reason(case: str) -> None:
    make_bad, reason, site = BAD_REPLIES[case]
    strategy = fedavg()
    replies = [train_reply(0, arrays_filled(1.0), n=1), make_bad(), train_reply(1, arrays_filled(4.0), n=3)]

    arrays, metrics = strategy.aggregate_train(1, replies)

    assert len(strategy.rejections) == 1
    rejection = strategy.rejections[0]
    assert reason in rejection.reason
    assert (rejection.round, rejection.stage, rejection.site_id) == (1, "train", site)
    assert rejection.node_id == 109
    # The bad reply never reached the average: (1*1 + 3*4) / 4 = 3.25 exactly.
    assert arrays is not None and metrics is not None
    for name in NAMES:
        np.testing.assert_array_equal(arrays[name].numpy(), np.full(SHARED[name], 3.25))
    assert metrics["num-sites"] == 2
    assert strategy.rounds[1].to_dict()["rejected"][0]["reason"] == rejection.reason


def test_personality_reply_rejected_even_when_other_checks_fail() -> None:
    strategy = fedavg()
    leak = reply(
        105,
        {"personality.prototypes": np.zeros((2, 2), np.float32)},
        {"num-examples": -1},
    )
    strategy.aggregate_train(1, [leak])
    assert "must never leave a site" in strategy.rejections[0].reason
    assert "personality.prototypes" in strategy.rejections[0].reason


def test_duplicate_site_ids_are_all_rejected() -> None:
    strategy = fedavg(min_train=1)
    replies = [
        train_reply(0, arrays_filled(1.0)),
        train_reply(2, arrays_filled(5.0)),
        reply(777, arrays_filled(9.0), {"num-examples": 10, "site-id": 2}),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert [r.reason for r in strategy.rejections] == ["duplicate site id 2"] * 2
    np.testing.assert_array_equal(arrays["rarm.head.bias"].numpy(), np.ones(3))


def test_global_record_and_shared_names_must_exclude_local_names() -> None:
    with pytest.raises(ValueError, match="never leave a site"):
        build_strategy("fedavg", NAMES + ["personality.stem.weight"])
    strategy = build_strategy("fedavg", NAMES)
    full = arrayrecord({**arrays_filled(0.0), "personality.stem.weight": np.ones(1)})
    with pytest.raises(ValueError, match="outside the shared list: personality.stem"):
        strategy.configure_train(1, full, ConfigRecord(), LocalGrid({100: None}))
    shared = select_shared(full, list(reversed(NAMES)))
    assert list(shared.keys()) == list(reversed(NAMES))


def test_aggregate_before_configure_is_an_error() -> None:
    strategy = build_strategy("fedavg", NAMES)
    with pytest.raises(RuntimeError, match="before configure_train"):
        strategy.aggregate_train(1, [train_reply(0, arrays_filled(1.0))])


def test_extra_configrecord_in_reply_is_accepted() -> None:
    """Flower's own consistency check ignores ConfigRecords; a 2nd MetricRecord trips it."""
    site_name = {"site": ConfigRecord({"name": "site-01"})}
    with_config = reply(100, arrays_filled(1.0), {"num-examples": 1, "site-id": 0}, extra=site_name)
    validate_message_reply_consistency([with_config.content], "num-examples", True)
    two_metrics = RecordDict(
        {
            "arrays": arrayrecord(arrays_filled(1.0)),
            "metrics": MetricRecord({"num-examples": 1}),
            "more": MetricRecord({"num-examples": 1}),
        }
    )
    with pytest.raises(InconsistentMessageReplies):
        validate_message_reply_consistency([two_metrics], "num-examples", True)

    strategy = fedavg()
    arrays, _ = strategy.aggregate_train(1, [with_config, train_reply(1, arrays_filled(3.0), n=1)])
    assert not strategy.rejections
    np.testing.assert_array_equal(arrays["rarm.head.bias"].numpy(), np.full(3, 2.0))


# ----------------------------------------------------------- aggregation math
def test_weighted_average_equals_hand_computation() -> None:
    sites = {0: (arrays_random(0), 7), 1: (arrays_random(1), 2), 2: (arrays_random(2), 31)}
    strategy = fedavg()
    arrays, metrics = strategy.aggregate_train(
        1, [train_reply(s, a, n=n, **{"train-loss": float(s)}) for s, (a, n) in sites.items()]
    )
    total = sum(n for _, n in sites.values())
    for name in NAMES:
        expected = sum(a[name].astype(np.float64) * n for a, n in sites.values()) / total
        np.testing.assert_allclose(arrays[name].numpy(), expected, rtol=1e-6, atol=1e-7)
        assert arrays[name].dtype == "float32"
    assert metrics["train-loss"] == pytest.approx((0 * 7 + 1 * 2 + 2 * 31) / total)
    assert metrics["num-examples"] == total


@pytest.mark.parametrize("rule", ["fedavg", "fedadam", "fedtrimmedavg"])
def test_aggregate_is_bit_identical_for_any_reply_order(rule: str) -> None:
    rng = np.random.default_rng(0)
    sites = [(s, arrays_random(s), int(rng.integers(1, 50))) for s in range(6)]
    results = []
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(sites))
        strategy = build_strategy(rule, NAMES)
        configured(strategy)
        replies = [train_reply(sites[i][0], sites[i][1], n=sites[i][2]) for i in order]
        arrays, _ = strategy.aggregate_train(1, replies)
        results.append({name: arrays[name].numpy().tobytes() for name in NAMES})
    assert all(result == results[0] for result in results[1:])


# ------------------------------------------------------------ minimum of sites
def test_round_skipped_when_too_few_valid_replies() -> None:
    strategy = fedavg(min_train=2)
    replies = [
        train_reply(0, arrays_filled(1.0)),
        train_reply(1, {**arrays_filled(1.0), "personality.x": np.ones(1, np.float32)}),
        error_reply(102, "out of memory"),
    ]
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert len(strategy.rejections) == 2
    assert strategy.rounds[1].aggregated is False
    assert list(strategy.rounds[1].train_per_site) == [0]


def test_round_proceeds_at_exactly_the_minimum() -> None:
    strategy = fedavg(min_train=2)
    replies = [
        train_reply(0, arrays_filled(1.0)),
        train_reply(1, arrays_filled(3.0)),
        error_reply(102, "out of memory"),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and strategy.rounds[1].aggregated
    np.testing.assert_array_equal(arrays["rarm.head.bias"].numpy(), np.full(3, 2.0))


# ------------------------------------------------------------------- metrics
def test_evaluate_metrics_per_site_and_weighted() -> None:
    strategy = build_strategy("fedavg", NAMES, min_evaluate_nodes=2)
    replies = [
        reply(100, None, {"num-examples": 1, "site-id": 3, "rmse": 1.0, "pcc": float("nan")},
              message_type=MessageType.EVALUATE),
        reply(101, None, {"num-examples": 3, "site-id": 1, "rmse": 2.0, "pcc": 0.5, "epsilon": 4.0},
              message_type=MessageType.EVALUATE),
        reply(102, {"personality.p": np.ones(1, np.float32)}, {"num-examples": 3, "site-id": 2},
              message_type=MessageType.EVALUATE),
    ]
    metrics = strategy.aggregate_evaluate(1, replies)
    log = strategy.rounds[1]
    assert list(log.evaluate_per_site) == [1, 3]
    assert log.evaluate_per_site[3]["rmse"] == 1.0
    assert metrics["rmse"] == pytest.approx((1 * 1.0 + 3 * 2.0) / 4)
    assert metrics["pcc"] == pytest.approx(0.5)  # NaN left out of the average
    assert metrics["epsilon"] == pytest.approx(4.0)
    assert metrics["num-examples"] == 4 and metrics["num-sites"] == 2
    assert [r.site_id for r in strategy.rejections] == [2]
    summary = log.to_dict()
    assert summary["eval"]["rmse"] == metrics["rmse"]
    assert set(summary["eval"]["per_site"]) == {"1", "3"}


def test_evaluate_below_minimum_returns_none() -> None:
    strategy = build_strategy("fedavg", NAMES, min_evaluate_nodes=2)
    ok = reply(100, None, {"num-examples": 1, "site-id": 3, "rmse": 1.0},
               message_type=MessageType.EVALUATE)
    assert strategy.aggregate_evaluate(1, [ok, error_reply(101, "boom")]) is None


# --------------------------------------------------------------------- bytes
def npy_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Serialized .npy size of each array plus its name (Flower's count_bytes)."""
    total = 0
    for name, value in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        total += len(buffer.getvalue()) + len(name)
    return total


def test_bytes_counted_equal_known_tensor_sizes() -> None:
    strategy = build_strategy("fedavg", NAMES)
    sent = configured(strategy, nodes=3)
    per_model = npy_bytes(arrays_filled(0.0))
    raw = sum(4 * int(np.prod(shape)) for shape in SHARED.values())
    assert raw == 60 and per_model > raw  # payload = raw tensor bytes + npy headers
    assert len(sent) == 3
    assert strategy.rounds[1].bytes_down_train == 3 * per_model

    replies = [train_reply(0, arrays_filled(1.0)), train_reply(1, arrays_filled(2.0)),
               error_reply(102, "lost")]
    strategy.aggregate_train(1, replies)
    grid = LocalGrid({100: None, 101: None})  # type: ignore[dict-item]
    strategy.configure_evaluate(1, arrayrecord(arrays_filled(0.0)), ConfigRecord(), grid)
    log = strategy.rounds[1]
    assert log.bytes_up_train == 2 * per_model
    assert log.bytes_down_evaluate == 2 * per_model
    assert log.to_dict()["bytes_down"] == 5 * per_model
    assert log.to_dict()["bytes_up"] == 2 * per_model
