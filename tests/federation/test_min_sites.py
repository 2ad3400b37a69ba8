"""The min-sites rule without processes: messages, the bounded wait, site labels, hooks."""
from __future__ import annotations

import pytest

from server.min_sites import (
    TooFewSites,
    ensure_nodes,
    node_label,
    node_shortfall,
    train_shortfall,
    wait_for_nodes,
)
from flwr.app import Error, Message

from strategies.ordering import instruction_nodes, node_sites, reply_node_id, site_label
from tests.federation.message_helpers import instruction, reply


class FakeClock:
    """A clock that only moves when ``sleep`` is called."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeGrid:
    """``get_node_ids`` answers from a script of node lists (the last one repeats)."""

    def __init__(self, *answers: list[int]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def get_node_ids(self) -> list[int]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def _round(per_site: list[str], rejected: list[dict], number: int = 2) -> dict:
    return {"round": number, "train": {"per_site": {s: {} for s in per_site}}, "rejected": rejected}


def test_enough_valid_replies_is_no_shortfall() -> None:
    assert train_shortfall(_round(["1", "2"], []), 2, {}, {}) is None
    assert train_shortfall(_round(["1", "2", "3"], []), 2, {}, {}) is None


def test_shortfall_names_minimum_replies_and_the_dead_site_from_earlier_rounds() -> None:
    dead = {"stage": "train", "site_id": None, "node_id": 77, "reason": "error reply (code 0): node offline"}
    message = train_shortfall(_round(["1", "3"], [dead]), 3, {11: 1, 77: 2, 33: 3}, {})
    assert message is not None
    assert "round 2" in message and "2 valid training replies (site 1, site 3)" in message
    assert "min-sites=3" in message
    assert "missing: site 2 (node 77): error reply (code 0): node offline" in message


def test_shortfall_uses_site_names_and_lists_silent_sites() -> None:
    names = {"0": "site-01", "1": "site-02", "2": "site-03"}
    bad = {"stage": "train", "site_id": 1, "node_id": 5, "reason": "carries personality.x"}
    evaluate = {"stage": "evaluate", "site_id": 0, "node_id": 4, "reason": "ignored"}
    message = train_shortfall(_round(["0"], [bad, evaluate]), 2, {4: 0, 5: 1, 6: 2}, names)
    assert "1 valid training replies (site-01)" in message
    assert "site-02 (node 5): carries personality.x" in message
    assert "site-03: no reply this round" in message
    assert "ignored" not in message


def test_shortfall_with_nothing_known() -> None:
    message = train_shortfall(_round([], []), 1, {}, {})
    assert "0 valid training replies (none)" in message and "no other site known" in message


def test_node_shortfall_names_connected_and_missing_sites() -> None:
    message = node_shortfall(3, "train", [11, 33], 3, 120.0, {11: 1, 22: 2, 33: 3}, {})
    assert message.startswith("round 3 train: 2 site(s) connected")
    assert "site 1 (node 11), site 3 (node 33)" in message
    assert "120 s" in message and "min-sites=3" in message
    assert message.endswith("missing: site 2 (node 22)")
    assert "no site seen yet" in node_shortfall(0, "evaluate", [], 2, 1.0, {}, {})


def test_labels() -> None:
    assert node_label(9, {9: 4}, {"4": "site-05"}) == "site-05 (node 9)"
    assert node_label(9, {}, {}) == "unknown site (node 9)"
    assert site_label(3, 9, {}) == "site 3 (node 9)"
    assert site_label(None, 9, {9: 2}) == "site 2 (node 9, seen earlier)"
    assert site_label(None, 9, {}) == "unknown site (node 9)"


def test_node_sites_maps_reply_nodes_to_site_ids() -> None:
    replies = [reply(7, None, {"site-id": 2}), reply(8, None, {"site-id": 5})]
    assert node_sites(replies) == {7: 2, 8: 5}


def test_wait_returns_as_soon_as_enough_nodes_connect() -> None:
    clock, grid = FakeClock(), FakeGrid([1], [1], [1, 2])
    ids, waited, enough = wait_for_nodes(grid.get_node_ids, 2, 60.0, clock=clock, sleep=clock.sleep)
    assert enough and ids == [1, 2] and waited == pytest.approx(2.0) and grid.calls == 3


def test_wait_is_bounded() -> None:
    clock, grid = FakeClock(), FakeGrid([1])
    ids, waited, enough = wait_for_nodes(grid.get_node_ids, 2, 2.5, clock=clock, sleep=clock.sleep)
    assert not enough and ids == [1] and waited == pytest.approx(2.5)
    assert clock.sleeps == pytest.approx([1.0, 1.0, 0.5])


def test_ensure_nodes_passes_or_raises_a_clear_failure() -> None:
    assert ensure_nodes(FakeGrid([1, 2]), 1, "train", 2, 0.0, {}, {}) == [1, 2]
    clock = FakeClock()
    with pytest.raises(TooFewSites) as caught:
        ensure_nodes(FakeGrid([1]), 4, "evaluate", 2, 5.0, {1: 1, 2: 2}, {}, clock=clock, sleep=clock.sleep)
    assert caught.value.server_round == 4 and caught.value.stage == "evaluate"
    assert "min-sites=2" in str(caught.value) and "missing: site 2 (node 2)" in str(caught.value)
    assert clock.now == pytest.approx(5.0)


def superlink_error_for(instruction: Message) -> Message:
    """The error reply Flower's SuperLink sends for a dead node: from node 1 (the SuperLink),
    pointing at the instruction through ``reply_to_message_id``."""
    instruction.metadata.__dict__["_message_id"] = instruction.object_id  # as a push does
    answer = Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=instruction)
    answer.metadata.__dict__["_src_node_id"] = 1
    return answer


def test_reply_node_id_follows_the_instruction_of_a_superlink_error() -> None:
    sent = instruction(42)
    answer = superlink_error_for(sent)
    assert answer.metadata.src_node_id == 1
    nodes = instruction_nodes([sent, instruction(43)])  # no id yet: not listed
    assert nodes == {sent.metadata.message_id: 42}
    assert reply_node_id(answer, nodes) == 42
    assert reply_node_id(reply(43, None, {"site-id": 1}), nodes) == 43


def test_strategy_names_a_dead_site_from_an_earlier_round(caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from strategies import build_strategy
    from tests.federation.message_helpers import LocalGrid

    shared = {"w": np.zeros(2, np.float32)}

    def site(site_id: int):
        return lambda msg: reply(msg.metadata.dst_node_id, shared, {"num-examples": 1, "site-id": site_id})

    strategy = build_strategy("fedavg", ["w"], min_train_nodes=1, min_evaluate_nodes=1)
    grid = LocalGrid({10: site(1), 20: site(2)})
    arrays = ArrayRecord({"w": Array(shared["w"])})
    strategy.aggregate_train(1, grid.send_and_receive(strategy.configure_train(1, arrays, ConfigRecord(), grid)))
    assert strategy.node_sites == {10: 1, 20: 2}
    grid.handlers[20] = lambda msg: superlink_error_for(msg)
    with caplog.at_level("WARNING", logger="flwr"):
        strategy.aggregate_train(2, grid.send_and_receive(strategy.configure_train(2, arrays, ConfigRecord(), grid)))
    rejection = strategy.rounds[2].rejections[0]
    assert rejection.site_id is None and rejection.node_id == 20
    assert "site 2 (node 20, seen earlier)" in caplog.text
