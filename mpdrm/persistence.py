"""Crash-safe file writes and RNG snapshots shared by the site, the server and the data cache.

A file is written to a temporary file in the same folder, flushed to disk, then moved over
the target with ``os.replace``: a reader sees the old file or the new one, never a torn one.
"""
from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextmanager
def atomic_open(path: Path | str, *, fsync: bool = True, keep_previous: Path | str | None = None) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    Parameters
    ----------
    path : Path or str
        The target; its folder is created if missing.
    fsync : bool
        Flush the data to disk before the rename (durable against power loss).
    keep_previous : Path or str, optional
        Where the file ``path`` held so far is moved once the new one is completely
        written (and only then: a write that fails, e.g. disk full, leaves both the
        current and the previous file as they were).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if keep_previous is not None and path.is_file():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, blob: bytes, *, fsync: bool = True,
                       keep_previous: Path | str | None = None) -> None:
    """Write ``blob`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, fsync=fsync, keep_previous=keep_previous) as fh:
        fh.write(blob)


def capture_rng() -> dict[str, Any]:
    """Snapshot the python, numpy and torch global RNG states."""
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore the states captured by :func:`capture_rng`."""
    import torch

    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch global RNGs from one integer."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
