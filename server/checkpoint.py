"""The server checkpoint: one data-only file, written atomically after every completed round.

Holds the global shared arrays, the round number, the strategy's (and server
optimizer's) state, the server RNG states and the summary so far, so that a server
started with ``resume=true`` continues exactly after the last complete round.

The file is ``run-dir/checkpoint.safetensors`` (:mod:`mpdrm.tensorfile`: tensors plus a
JSON skeleton; reading it never runs code). The checkpoint it replaces is kept as
``checkpoint.prev.safetensors`` once the new one is completely written: a damaged or
missing current file (a torn write, a full disk) falls back to the previous one with a
WARNING, and a failed write leaves both as they were. A ``checkpoint.pt`` of an older
version (a pickle) is refused, never loaded.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.supercore import log

from mpdrm import tensorfile
from mpdrm.persistence import atomic_write_bytes, capture_rng, restore_rng
from mpdrm.tensorfile import TensorFileError

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "CheckpointError", "LEGACY_CHECKPOINT_FILE", "PREV_CHECKPOINT_FILE",
           "atomic_write_bytes", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.safetensors"
PREV_CHECKPOINT_FILE = "checkpoint.prev.safetensors"
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"  # a pickle of an older version: refused
_KIND = "fedmpdrm-server-checkpoint"
_FIELDS = ("round", "arrays", "strategy_state", "rng", "summary")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged with no previous one, foreign, or a pickle)."""


@dataclass
class Checkpoint:
    """Server state after a completed round.

    Attributes
    ----------
    round : int
        Last complete round.
    arrays : dict
        Global shared arrays, name -> numpy array (global key order).
    strategy_state : dict
        From :func:`server.strategy.capture_state`.
    rng : dict
        Python, numpy and torch RNG states of the server process.
    summary : dict
        The summary (``summary.json`` content) up to this round.
    fallback : str or None
        Set by :func:`load_checkpoint` (never saved): why the newest file was unusable when
        this checkpoint is the previous one it fell back to.
    """

    round: int
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, Any]
    rng: dict[str, Any]
    summary: dict[str, Any]
    fallback: str | None = None


def _tree(ckpt: Checkpoint) -> dict[str, Any]:
    return {"kind": _KIND, **{name: getattr(ckpt, name) for name in _FIELDS}}


def _from_tree(tree: Any, path: Path) -> Checkpoint:
    if not isinstance(tree, dict) or tree.get("kind") != _KIND or not all(k in tree for k in _FIELDS):
        raise TensorFileError(f"{path}: not a FedMPDRM server checkpoint")
    return Checkpoint(round=int(tree["round"]), arrays={str(k): np.asarray(v) for k, v in tree["arrays"].items()},
                      strategy_state=tree["strategy_state"], rng=tree["rng"], summary=tree["summary"])


def _readable(path: Path) -> bool:
    try:
        _read(path)
    except (TensorFileError, OSError):
        return False
    return True


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``run_dir/checkpoint.safetensors`` atomically, keeping the one it replaces as
    ``checkpoint.prev.safetensors``; returns its path. A damaged current file (the run
    resumed from the previous checkpoint) is replaced, not kept: the good previous
    checkpoint stays.

    Raises
    ------
    OSError
        The write failed (e.g. disk full); the message names the file, and the previous
        checkpoint is left as it was (a resume continues from it).
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    blob = tensorfile.dumps(_tree(ckpt))
    keep = path.with_name(PREV_CHECKPOINT_FILE) if _readable(path) else None  # never a damaged one
    try:
        atomic_write_bytes(path, blob, keep_previous=keep)
    except OSError as err:
        code = err.errno or errno.EIO
        raise OSError(code, f"{path}: round {ckpt.round} checkpoint not written ({err.strerror or err}); "
                            "the previous checkpoint is kept: free space, then resume the run (resume=true)") from err
    return path


def _refuse_legacy(run_dir: Path) -> None:
    old = run_dir / LEGACY_CHECKPOINT_FILE
    if old.is_file():
        raise CheckpointError(
            f"{old}: checkpoint written by an older version of FedMPDRM (a pickle); not loaded: pickled "
            "files can run code. Start a new run (a new run-dir, or resume=false)")


def _read(path: Path) -> Checkpoint:
    return _from_tree(tensorfile.load(path), path)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """Read ``run_dir/checkpoint.safetensors``; ``None`` if the run has none.

    A damaged or missing current file falls back to ``checkpoint.prev.safetensors`` with a
    WARNING naming the bad file (also in the returned checkpoint's ``fallback``).

    Raises
    ------
    CheckpointError
        No readable checkpoint although one was written (the message names the files),
        or only an older version's ``checkpoint.pt``.
    """
    run_dir = Path(run_dir)
    current, previous = run_dir / CHECKPOINT_FILE, run_dir / PREV_CHECKPOINT_FILE
    if not current.is_file() and not previous.is_file():
        _refuse_legacy(run_dir)
        return None
    try:
        return _read(current)
    except (TensorFileError, OSError) as err:
        problem = str(err) if isinstance(err, TensorFileError) else f"{current}: {err.strerror or err}"
    if not previous.is_file():
        raise CheckpointError(f"unreadable checkpoint {problem}; no previous checkpoint ({previous.name}) "
                              "to fall back to: start a new run")
    try:
        ckpt = _read(previous)
    except TensorFileError as err:
        raise CheckpointError(f"unreadable checkpoint {problem}; the previous one is unreadable too: {err}") from None
    ckpt.fallback = f"checkpoint {problem}; falling back to the previous checkpoint {previous} (round {ckpt.round})"
    log(WARNING, "%s", ckpt.fallback)
    return ckpt
