"""The server checkpoint: one file, written atomically after every completed round.

Holds the global shared arrays, the round number, the strategy's (and server
optimizer's) state, the server RNG states and the summary so far, so that a server
started with ``resume=true`` continues exactly after the last complete round.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpdrm.persistence import atomic_write_bytes, capture_rng, restore_rng

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "atomic_write_bytes", "capture_rng", "load_checkpoint",
           "restore_rng", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"


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
    """

    round: int
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, Any]
    rng: dict[str, Any]
    summary: dict[str, Any]


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically; returns its path."""
    buf = io.BytesIO()
    pickle.dump(ckpt, buf, protocol=pickle.HIGHEST_PROTOCOL)
    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """Read ``run_dir/checkpoint.pt``; ``None`` if there is none."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            ckpt = pickle.load(fh)
    except Exception as err:
        raise RuntimeError(f"{path}: unreadable checkpoint ({err})") from err
    if not isinstance(ckpt, Checkpoint):
        raise RuntimeError(f"{path}: not a FedMPDRM server checkpoint")
    return ckpt
