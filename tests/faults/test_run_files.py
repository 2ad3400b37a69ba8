"""Nothing a run writes is executable when read back, and a damaged file never loses the run.

The coordinator's checkpoint and a site's private state are data-only files
(``mpdrm.tensorfile``): a planted pickle is refused (its payload never runs), an older
version's ``checkpoint.pt``/``site_state.pt`` is refused naming it, a truncated current
file falls back to the previous one with a WARNING, and a full disk while writing leaves
the previous checkpoint valid.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from client.state import PREV_FILE, STATE_FILE, SiteStateError, SiteStateStore
from server.checkpoint import (
    CHECKPOINT_FILE,
    PREV_CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    save_checkpoint,
)
from server.strategy import capture_state, make_strategy, restore_state
from strategies.round_log import Rejection

pytestmark = pytest.mark.faults


def _planted_pickle(path: Path, marker: Path) -> None:
    """A pickle whose loading creates ``marker`` (what a tampered run file could do)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps({"round": 1, "x": Payload()}))


def _checkpoint(round_: int, strategy_state: dict | None = None) -> Checkpoint:
    random.seed(round_)
    return Checkpoint(round=round_, arrays={"rarm.w": np.full((2, 3), round_, dtype=np.float32)},
                      strategy_state=strategy_state or {"aggregators": [], "rounds": {}, "node_sites": {}},
                      rng=capture_rng(), summary={"rounds": [{"round": r} for r in range(1, round_ + 1)]})


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _state(round_: int) -> dict:
    return {"round": round_, "local": {"personality.w": torch.full((2,), float(round_))}, "optimizer": None,
            "dp": None, "site": "site-01"}


def _truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


# ------------------------------------------------------------------ planted pickles
def test_a_planted_pickle_checkpoint_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    _planted_pickle(tmp_path / CHECKPOINT_FILE, marker)
    with pytest.raises(CheckpointError, match=CHECKPOINT_FILE):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_an_old_pickled_checkpoint_is_refused_naming_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    _planted_pickle(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: .*older version.*not loaded: pickled files can run "
                                              r"code.*Start a new run"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_a_planted_pickle_site_state_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    _planted_pickle(tmp_path / STATE_FILE, marker)
    with pytest.raises(SiteStateError, match=STATE_FILE):
        SiteStateStore(tmp_path, _context()).load(2)
    _planted_pickle(tmp_path / "site_state.pt", marker)
    (tmp_path / STATE_FILE).unlink()
    with pytest.raises(SiteStateError, match=r"site_state\.pt: .*older version.*not loaded: pickled files can run "
                                             r"code.*Start a new run"):
        SiteStateStore(tmp_path, _context()).load(2)
    assert not marker.exists()


def test_a_planted_pickle_beside_a_good_previous_state_is_skipped(tmp_path: Path, caplog) -> None:
    store = SiteStateStore(tmp_path, _context())
    store.save(_state(1))
    store.save(_state(2))
    marker = tmp_path / "executed"
    _planted_pickle(tmp_path / STATE_FILE, marker)
    with caplog.at_level(logging.WARNING):
        state = SiteStateStore(tmp_path, _context()).load(3)
    assert state["round"] == 1 and not marker.exists()
    assert str(tmp_path / STATE_FILE) in caplog.text


# ------------------------------------------------------------------ truncated files
def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    save_checkpoint(tmp_path, _checkpoint(2))
    assert load_checkpoint(tmp_path).round == 2
    assert load_checkpoint_from(tmp_path / PREV_CHECKPOINT_FILE).round == 1
    _truncate(tmp_path / CHECKPOINT_FILE)
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(tmp_path)
    assert ckpt.round == 1
    np.testing.assert_array_equal(ckpt.arrays["rarm.w"], np.full((2, 3), 1, dtype=np.float32))
    assert str(tmp_path / CHECKPOINT_FILE) in caplog.text and "previous checkpoint" in caplog.text
    assert ckpt.fallback and str(tmp_path / CHECKPOINT_FILE) in ckpt.fallback
    save_checkpoint(tmp_path, _checkpoint(2))
    assert load_checkpoint(tmp_path).fallback is None          # a readable newest file


def load_checkpoint_from(path: Path) -> Checkpoint:
    """The checkpoint stored in ``path`` (copied into a folder of its own)."""
    folder = path.parent / f"only-{path.name}"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(path.read_bytes())
    return load_checkpoint(folder)


def test_a_truncated_checkpoint_without_a_previous_one_fails_clearly(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    assert not (tmp_path / PREV_CHECKPOINT_FILE).exists()
    _truncate(tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=rf"{CHECKPOINT_FILE}.*no previous checkpoint"):
        load_checkpoint(tmp_path)


def test_a_truncated_site_state_falls_back_to_the_previous_state(tmp_path: Path, caplog) -> None:
    store = SiteStateStore(tmp_path, _context())
    store.save(_state(1))
    store.save(_state(2))
    assert (tmp_path / PREV_FILE).is_file()
    _truncate(tmp_path / STATE_FILE)
    restarted = SiteStateStore(tmp_path, _context())  # a restarted site: no memory mirror
    with caplog.at_level(logging.WARNING):
        state = restarted.load(3)
    assert state["round"] == 1 and torch.equal(state["local"]["personality.w"], torch.full((2,), 1.0))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and str(tmp_path / STATE_FILE) in warnings[0].getMessage()
    # both files damaged: no silent fresh start
    _truncate(tmp_path / PREV_FILE)
    with pytest.raises(SiteStateError, match="no readable site state"):
        SiteStateStore(tmp_path, _context()).load(3)


def _with_ledger(round_: int, steps: int) -> dict:
    return {**_state(round_), "dp": {"accountant": {"history": [[1.0, 0.25, steps]]}, "unit": "patient"}}


def test_a_living_site_keeps_its_privacy_ledger_when_its_current_file_is_damaged(tmp_path: Path, caplog) -> None:
    from client.privacy import newest_ledger
    from client.state import CONTEXT_KEY
    from mpdrm import tensorfile

    context = _context()
    store = SiteStateStore(tmp_path, context)
    store.save(_with_ledger(1, 3))
    store.save(_with_ledger(2, 6))
    kept = context.state[CONTEXT_KEY]["blob"]
    assert len(kept) < 2_000 and set(tensorfile.loads(bytes(kept))) == {"round", "dp"}  # no weights in memory
    _truncate(tmp_path / STATE_FILE)
    with caplog.at_level(logging.WARNING):
        assert store.load(3)["round"] == 1  # the weights: the previous file's
    assert newest_ledger(store.candidates())["accountant"]["history"] == [[1.0, 0.25, 6]]  # the steps: all
    # a restarted node has only its files: the damaged round's steps are gone (the WARNING says so)
    assert newest_ledger(SiteStateStore(tmp_path, _context()).candidates())["accountant"]["history"] == [[1.0, 0.25, 3]]
    assert any("privacy ledger" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# ------------------------------------------------------------------ disk full
def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    save_checkpoint(tmp_path, _checkpoint(2))
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", _disk_full)
        with pytest.raises(OSError, match=rf"{CHECKPOINT_FILE}: round 3 checkpoint not written") as caught:
            save_checkpoint(tmp_path, _checkpoint(3))
    assert caught.value.errno == errno.ENOSPC
    assert {p.name for p in tmp_path.iterdir()} == {CHECKPOINT_FILE, PREV_CHECKPOINT_FILE}  # no temp file
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.round == 2 and ckpt.summary["rounds"][-1] == {"round": 2}
    assert load_checkpoint_from(tmp_path / PREV_CHECKPOINT_FILE).round == 1


def test_disk_full_while_saving_a_site_state_keeps_both_states(tmp_path: Path, monkeypatch) -> None:
    store = SiteStateStore(tmp_path, _context())
    store.save(_state(1))
    store.save(_state(2))
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", _disk_full)
        with pytest.raises(OSError):
            store.save(_state(3))
    restarted = SiteStateStore(tmp_path, _context())
    assert [s["round"] for s in restarted.candidates()] == [2, 1]


# ------------------------------------------------------------------ strategy state
def test_strategy_state_is_plain_data_and_round_trips(tmp_path: Path) -> None:
    cfg = {"mode": "mpdrm", "min-sites": 2, "fraction-train": 1.0, "fraction-evaluate": 1.0,
           "strategy.aggregation": "fedadam", "dp.mode": "none"}
    strategy = make_strategy(cfg, ["rarm.w"])
    log = strategy.round_log(1)
    log.bytes_up_train, log.train_per_site = 12, {3: {"train-loss": 0.5, "num-examples": 4}}
    log.rejections.append(Rejection(1, "train", None, 77, "late: no reply", budget_exhausted=False))
    strategy.node_sites = {11: 3}
    aggregator = strategy.aggregator
    aggregator.m_t = {"rarm.w": np.ones(3)}  # type: ignore[attr-defined]
    aggregator.v_t = {"rarm.w": np.full(3, 2.0)}  # type: ignore[attr-defined]
    save_checkpoint(tmp_path, _checkpoint(1, capture_state(strategy)))
    state = load_checkpoint(tmp_path).strategy_state
    fresh = make_strategy(cfg, ["rarm.w"])
    restore_state(fresh, state)
    assert fresh.rounds[1] == strategy.rounds[1] and fresh.rounds[1].rejections[0].node_id == 77
    assert fresh.node_sites == {11: 3}
    np.testing.assert_array_equal(fresh.aggregator.v_t["rarm.w"], np.full(3, 2.0))  # type: ignore[attr-defined]
