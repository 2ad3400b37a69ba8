"""The ServerApp and ClientApp code together over an in-process Grid (no Ray): resume
equivalence, site state continuity across rounds and process restarts, a crafted reply."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from client.handlers import open_session
from client.state import STATE_FILE
from mpdrm import tensorfile
from server.checkpoint import load_checkpoint
from tests.federation.message_helpers import ensure_task_identity
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("fed"), sites=2)


def _config(cohort: Path, root: Path, rounds: int, **extra) -> dict:
    return {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
            "num-server-rounds": rounds, **extra}


def _contexts() -> dict:
    return {100 + i: node_context(i, 2) for i in range(2)}


def test_resume_gives_the_same_final_weights(cohort: Path, tmp_path: Path) -> None:
    straight = run_in_process(_config(cohort, tmp_path / "a", 2), _contexts())
    # interrupted after round 1: the server stops, every site process is restarted
    run_in_process(_config(cohort, tmp_path / "b", 1), _contexts())
    resumed = run_in_process(_config(cohort, tmp_path / "b", 2, resume=True), _contexts())
    a, b = load_checkpoint(tmp_path / "a" / "run"), load_checkpoint(tmp_path / "b" / "run")
    assert a.round == b.round == 2 and resumed["resumed_from"] == 1
    assert list(a.arrays) == list(b.arrays) == straight["shared_keys"]
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    assert [r["round"] for r in resumed["rounds"]] == [1, 2]
    for site in straight["final"]["per_site"]:
        assert resumed["final"]["per_site"][site]["rmse"] == pytest.approx(straight["final"]["per_site"][site]["rmse"])
    # the in-process run also checks the summary's round content
    entry = straight["rounds"][0]
    assert entry["bytes_up"] > 0 and entry["bytes_down"] > 0 and not entry["rejected"]
    assert set(entry["eval"]["per_site"]) == {"site-01", "site-02"}
    assert not any(k.startswith("personality.") for k in straight["shared_keys"])
    assert straight["local_keys"] and all(k.startswith("personality.") for k in straight["local_keys"])


def test_site_state_continues_across_rounds_and_restarts(cohort: Path, tmp_path: Path) -> None:
    cfg = _config(cohort, tmp_path, 1)
    run_in_process(cfg, _contexts())
    saved = tensorfile.load(tmp_path / "state" / "site-01" / STATE_FILE)
    assert saved["round"] == 1 and saved["optimizer"] is not None
    assert saved["local"] and all(k.startswith("personality.") for k in saved["local"])
    # round 2 instruction to a restarted site process (fresh context): it starts from round 1's state
    ensure_task_identity()
    ckpt = load_checkpoint(tmp_path / "run")
    msg = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in ckpt.arrays.items()}),
                              "config": ConfigRecord({"server-round": 2})}), dst_node_id=100, message_type="train")
    fresh = node_context(0, 2)
    session = open_session(msg, fresh, cfg, for_round=2)
    model_state = session.model.state_dict()
    for name, value in saved["local"].items():
        assert torch.equal(model_state[name], value), name
    for name, value in ckpt.arrays.items():
        assert np.array_equal(model_state[name].numpy(), value), name
    # a brand-new site (no state) would start elsewhere: the check above can fail
    other = open_session(msg, node_context(0, 2), {**cfg, "state-root": str(tmp_path / "empty")}, for_round=2)
    assert any(not torch.equal(other.model.state_dict()[k], v) for k, v in saved["local"].items())


def test_crafted_reply_with_personality_is_rejected(cohort: Path, tmp_path: Path) -> None:
    def leak(handler):
        def leaking(message: Message) -> Message:
            reply = handler(message)
            if message.metadata.message_type == "train":
                reply.content["arrays"]["personality.leak"] = Array(np.zeros(3, dtype=np.float32))
            return reply
        return leaking

    summary = run_in_process(_config(cohort, tmp_path, 1, **{"min-sites": 1}), _contexts(), wrap={101: leak})
    rejected = summary["rounds"][0]["rejected"]
    assert len(rejected) == 1 and rejected[0]["site_id"] == 1 and "personality." in rejected[0]["reason"]
    assert list(summary["rounds"][0]["train"]["per_site"]) == ["site-01"]


def test_a_site_dying_mid_run_fails_the_run_clearly(cohort: Path, tmp_path: Path) -> None:
    from server.min_sites import TooFewSites
    from server.summary import read_summary
    from tests.federation.message_helpers import error_reply

    def dies_in_round_2(handler):
        def maybe(message: Message) -> Message:
            if int(message.content["config"]["server-round"]) == 2:
                return error_reply(101, "the node went offline")
            return handler(message)
        return maybe

    cfg = _config(cohort, tmp_path, 2, **{"fraction-evaluate": 0.0})
    with pytest.raises(TooFewSites) as caught:
        run_in_process(cfg, _contexts(), wrap={101: dies_in_round_2})
    message = str(caught.value)
    assert "round 2: 1 valid training replies (site-01), fewer than min-sites=2" in message
    assert "missing: site-02 (node 101): error reply" in message and "went offline" in message
    summary = read_summary(tmp_path / "run")
    assert summary["stopped"] == {"round": 2, "stage": "train", "reason": message, "failed": True}
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and not summary["rounds"][1]["aggregated"]
    assert load_checkpoint(tmp_path / "run").round == 1  # resumable from the last complete round


def test_too_few_connected_sites_fail_after_min_sites_wait(cohort: Path, tmp_path: Path) -> None:
    import time

    from server.min_sites import TooFewSites
    from server.summary import read_summary

    cfg = _config(cohort, tmp_path, 2, **{"min-sites": 3, "min-sites-wait": 0.5})
    start = time.monotonic()
    with pytest.raises(TooFewSites, match=r"round 0 evaluate: 2 site\(s\) connected .* fewer than min-sites=3"):
        run_in_process(cfg, _contexts())
    assert time.monotonic() - start < 30
    stopped = read_summary(tmp_path / "run")["stopped"]
    assert stopped["round"] == 0 and stopped["failed"] and "min-sites=3" in stopped["reason"]


def test_every_site_starts_its_personality_branch_from_the_run_seed(cohort: Path, tmp_path: Path) -> None:
    """The shared RARM reads each site's personality embedding: the local branches must start
    in one space (the same initial weights at every site), chosen by the run seed."""
    from mpdrm.contract.runconfig import merged
    from server.app import initial_model

    def first_session(partition: int, seed: int):
        cfg = _config(cohort, tmp_path / f"s{seed}", 1, seed=seed)
        _, _, arrays = initial_model(merged(cfg))
        msg = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                      dst_node_id=100 + partition, message_type="train")
        return open_session(msg, node_context(partition, 2), cfg, for_round=1).model.state_dict()

    ensure_task_identity()
    site_a, site_b, other_run = first_session(0, 0), first_session(1, 0), first_session(0, 1)
    names = [n for n in site_a if n.startswith(("personality.backbone.", "personality.head."))]
    assert names
    for name in names:
        assert torch.equal(site_a[name], site_b[name]), name
    assert any(not torch.equal(site_a[n], other_run[n]) for n in names)
