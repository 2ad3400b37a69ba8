"""Round deadlines: a connected site that never answers holds a stage for ``round-grace``
seconds once ``min-sites`` valid replies are in, not for ``round-timeout``."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, MessageType, RecordDict

from client.app import create_client_app
from server.app import run_server
from server.loop import Deadline, collect_replies, exchange
from server.min_sites import train_shortfall
from strategies import build_strategy
from tests.federation.message_helpers import LocalGrid, arrayrecord, ensure_task_identity, reply
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context

pytestmark = pytest.mark.faults

ARRAYS = {"rarm.w": np.zeros(3, dtype=np.float32)}


def _site(site_id: int, arrays: dict | None = ARRAYS):
    def handle(message):
        return reply(message.metadata.dst_node_id, arrays, {"site-id": site_id, "num-examples": 4})
    return handle


def _grid(delays: dict[int, float]) -> LocalGrid:
    return LocalGrid({100 + i: _site(i) for i in range(len(delays))}, delays={100 + i: d for i, d in delays.items()})


def _push(grid: LocalGrid, strategy, server_round: int = 1) -> list:
    return list(strategy.configure_train(server_round, arrayrecord(ARRAYS), ConfigRecord(), grid))


def test_a_silent_site_is_waited_for_only_the_grace_period() -> None:
    grid = _grid({0: 0.0, 1: 0.0, 2: math.inf})
    strategy = build_strategy("fedavg", list(ARRAYS), min_train_nodes=2, min_available_nodes=3)
    start = time.monotonic()
    replies = exchange(strategy, grid, 1, "train", _push(grid, strategy), arrayrecord(ARRAYS), 3600.0,
                       Deadline(min_sites=2, grace=0.5))
    waited = time.monotonic() - start
    assert len(replies) == 2 and 0.5 <= waited < 3.0
    late = strategy.rounds[1].rejections
    assert [(r.node_id, r.stage) for r in late] == [(102, "train")] and late[0].reason.startswith("late: ")
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and list(strategy.rounds[1].train_per_site) == [0, 1]


def test_a_reply_within_the_grace_period_counts_and_ends_the_wait() -> None:
    grid = _grid({0: 0.0, 1: 0.0, 2: 0.3})
    strategy = build_strategy("fedavg", list(ARRAYS), min_train_nodes=2, min_available_nodes=3)
    start = time.monotonic()
    replies = exchange(strategy, grid, 1, "train", _push(grid, strategy), arrayrecord(ARRAYS), 3600.0,
                       Deadline(min_sites=2, grace=5.0))
    assert len(replies) == 3 and time.monotonic() - start < 2.0 and not strategy.rounds[1].rejections


def test_invalid_replies_do_not_start_the_grace_period() -> None:
    # site 1 replies at once with a leaked personality name; site 2 is valid but slow
    leaky = {**ARRAYS, "personality.w": np.zeros(2, dtype=np.float32)}
    grid = LocalGrid({100: _site(0), 101: _site(1, leaky), 102: _site(2)}, delays={102: 0.6})
    strategy = build_strategy("fedavg", list(ARRAYS), min_train_nodes=2, min_available_nodes=3)
    replies = exchange(strategy, grid, 1, "train", _push(grid, strategy), arrayrecord(ARRAYS), 3600.0,
                       Deadline(min_sites=2, grace=0.1))
    assert len(replies) == 3 and not strategy.rounds[1].rejections  # the slow valid reply was awaited


def test_too_few_replies_wait_for_the_timeout() -> None:
    grid = _grid({0: 0.0, 1: math.inf})
    ensure_task_identity()
    from flwr.app import Message

    messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN) for node in (100, 101)]
    start = time.monotonic()
    replies, unanswered, enough = collect_replies(grid, messages, timeout=0.8, deadline=Deadline(2, 0.1),
                                                  counts=lambda m: True)
    assert len(replies) == 1 and [m.metadata.dst_node_id for m in unanswered] == [101] and not enough
    assert 0.8 <= time.monotonic() - start < 3.0


def test_a_round_short_of_sites_names_the_silent_nodes() -> None:
    # round 1 of a deployment: no site is known by name yet, so the record must carry the node
    grid = _grid({0: 0.0, 1: math.inf})
    strategy = build_strategy("fedavg", list(ARRAYS), min_train_nodes=2, min_available_nodes=2)
    replies = exchange(strategy, grid, 1, "train", _push(grid, strategy), arrayrecord(ARRAYS), 0.5,
                       Deadline(min_sites=2, grace=0.1))
    assert len(replies) == 1
    silent = strategy.rounds[1].rejections
    assert [(r.node_id, r.stage, r.reason) for r in silent] == [(101, "train", "no reply within round-timeout=0.5 s")]
    strategy.aggregate_train(1, replies)
    message = train_shortfall(strategy.round_log(1).to_dict(), 2, {}, {})
    assert message is not None and "missing: unknown site (node 101): no reply within round-timeout=0.5 s" in message


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("deadline"), sites=2)


def test_a_run_with_a_silent_site_is_not_held_for_the_round_timeout(cohort: Path, tmp_path: Path) -> None:
    """The real ServerApp and ClientApp in process; site-02 (node 101) is connected but never answers."""
    cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(tmp_path / "run"), "state-root": str(tmp_path / "state"),
           "num-server-rounds": 1, "min-sites": 1, "round-grace": 1.0, "round-timeout": 3600.0}
    ensure_task_identity()
    client = create_client_app(cfg)
    contexts = {100 + i: node_context(i, 2) for i in range(2)}
    handlers = {node: (lambda c: (lambda message: client(message, c)))(ctx) for node, ctx in contexts.items()}
    grid = LocalGrid(handlers, seed=1, delays={101: math.inf})
    start = time.monotonic()
    summary = run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}), cfg)
    wall = time.monotonic() - start
    assert wall < 120  # three stages (initial evaluation, train, evaluate), each ~1 s of grace, not 3600 s
    entry = summary["rounds"][0]
    assert entry["aggregated"] and list(entry["train"]["per_site"]) == ["site-01"]
    late = [(r["stage"], r["node_id"]) for r in entry["rejected"]]
    assert late == [("train", 101), ("evaluate", 101)]
    assert all(r["reason"].startswith("late: no reply within round-grace=1 s") for r in entry["rejected"])
    print(f"run with a silent site: {wall:.1f} s wall for round 0 + round 1 (round-timeout 3600 s)")
