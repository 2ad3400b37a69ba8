"""A site's two saved states are two different rounds, whatever order faults come in.

Found by the fault-injection harness (``coordinator`` script): the coordinator dies after a
site saved round 2, the run is resumed from round 1 and the site trains round 2 again.
Rotating the first round-2 file into ``site_state.prev.safetensors`` left the site with two
round-2 states and no round 1, so a later resume from the round-1 checkpoint (its round-2
checkpoint truncated) silently started the site's round 2 without its private state.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from client.state import PREV_FILE, STATE_FILE, SiteStateStore

pytestmark = pytest.mark.faults


def _store(folder: Path) -> SiteStateStore:
    """A store of a freshly started site process (no memory mirror)."""
    return SiteStateStore(folder, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))


def _state(round_: int, value: float) -> dict:
    return {"round": round_, "local": {"personality.w": torch.full((2,), value)}, "optimizer": None, "dp": None,
            "site": "site-01"}


def test_a_round_trained_again_keeps_the_state_before_it(tmp_path: Path) -> None:
    first = _store(tmp_path)
    first.save(_state(1, 1.0))
    first.save(_state(2, 2.0))  # the coordinator dies before checkpointing round 2
    _store(tmp_path).save(_state(2, 2.5))  # the resumed run trains round 2 again
    restarted = _store(tmp_path)
    assert [s["round"] for s in restarted.candidates()] == [2, 1]
    state = restarted.load(2)  # resumed from the round-1 checkpoint once more
    assert state is not None and state["round"] == 1
    assert torch.equal(state["local"]["personality.w"], torch.full((2,), 1.0))
    assert torch.equal(restarted.load(3)["local"]["personality.w"], torch.full((2,), 2.5))


def test_a_damaged_state_is_not_kept_instead_of_the_good_previous_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(_state(1, 1.0))
    store.save(_state(2, 2.0))
    blob = (tmp_path / STATE_FILE).read_bytes()
    (tmp_path / STATE_FILE).write_bytes(blob[: len(blob) // 2])
    _store(tmp_path).save(_state(3, 3.0))  # trained from round 1 (the damaged round 2 is skipped)
    assert [s["round"] for s in _store(tmp_path).candidates()] == [3, 1]
    assert (tmp_path / PREV_FILE).is_file()


def test_a_damaged_checkpoint_does_not_displace_the_previous_one(tmp_path: Path) -> None:
    """Also seen in the ``coordinator`` script: after a resume from the previous checkpoint,
    the next save moved the truncated file into ``checkpoint.prev.safetensors``."""
    import numpy as np

    from server.checkpoint import CHECKPOINT_FILE, Checkpoint, capture_rng, load_checkpoint, save_checkpoint

    def ckpt(round_: int) -> Checkpoint:
        return Checkpoint(round=round_, arrays={"rarm.w": np.full(3, round_, dtype=np.float32)},
                          strategy_state={}, rng=capture_rng(), summary={"rounds": []})

    save_checkpoint(tmp_path, ckpt(1))
    save_checkpoint(tmp_path, ckpt(2))
    blob = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(blob[: len(blob) // 2])
    assert load_checkpoint(tmp_path).round == 1  # the resume falls back, then redoes round 2
    save_checkpoint(tmp_path, ckpt(2))
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"damaged again")
    assert load_checkpoint(tmp_path).round == 1


def test_a_site_with_only_later_states_says_it_starts_without_one(tmp_path: Path, caplog) -> None:
    import logging

    store = _store(tmp_path)
    store.save(_state(2, 2.0))
    store.save(_state(3, 3.0))
    with caplog.at_level(logging.WARNING):
        assert _store(tmp_path).load(2) is None  # resumed from the round-1 checkpoint: nothing to continue from
    assert "holds rounds 3, 2 only, none before round 2" in caplog.text
