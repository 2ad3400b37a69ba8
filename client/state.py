"""The site's private state: kept in ``context.state`` and on disk, written atomically.

The state is a plain dict (``torch.save``-able)::

    {"round": int,                 # last completed training round at this site
     "local": {name: Tensor},      # parameters that never leave the site
     "optimizer": dict | None,     # local optimizer state
     "dp": dict | None,            # DP accountant history (client-side DP)
     "site": str}                  # the site's folder name

On disk it lives in ``STATE_DIR/site_state.pt``; the previous version is kept as
``site_state.prev.pt`` so that a server resumed from round ``k`` finds the site's
state of round ``k`` even if the site had already trained round ``k + 1``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context

from mpdrm.persistence import atomic_write_bytes, capture_rng, restore_rng, seed_all

__all__ = ["SiteStateStore", "capture_rng", "restore_rng", "seed_all", "STATE_FILE", "PREV_FILE"]

STATE_FILE = "site_state.pt"
PREV_FILE = "site_state.prev.pt"
CONTEXT_KEY = "mpdrm-site-state"


def _to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _from_bytes(blob: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)


class SiteStateStore:
    """Load and save one site's private state (memory mirror + disk)."""

    def __init__(self, state_dir: Path, context: Context) -> None:
        self.state_dir = Path(state_dir)
        self.context = context

    @property
    def path(self) -> Path:
        """The current state file."""
        return self.state_dir / STATE_FILE

    def _candidates(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        record = self.context.state.get(CONTEXT_KEY) if CONTEXT_KEY in self.context.state else None
        if record is not None:
            found.append(_from_bytes(record["blob"]))
        for name in (STATE_FILE, PREV_FILE):
            file = self.state_dir / name
            if file.is_file():
                try:
                    found.append(torch.load(file, map_location="cpu", weights_only=False))
                except Exception as err:  # a torn or foreign file must not kill the site
                    raise RuntimeError(f"{file}: unreadable site state ({err})") from err
        return found

    def candidates(self) -> list[dict[str, Any]]:
        """Every saved state the site can read (memory mirror, current and previous file)."""
        return self._candidates()

    def load(self, server_round: int | None = None) -> dict[str, Any] | None:
        """The state to continue from before ``server_round``.

        Prefers a state whose ``round`` is ``server_round - 1``; otherwise the newest one
        older than ``server_round``; ``None`` when the site has no usable state.
        """
        states = self._candidates()
        if not states:
            return None
        if server_round is None:
            return max(states, key=lambda s: s["round"])
        exact = [s for s in states if s["round"] == server_round - 1]
        if exact:
            return exact[0]
        older = [s for s in states if s["round"] < server_round]
        return max(older, key=lambda s: s["round"]) if older else None

    def save(self, state: dict[str, Any]) -> None:
        """Mirror ``state`` into ``context.state`` and write it atomically to disk."""
        blob = _to_bytes(state)
        self.context.state[CONTEXT_KEY] = ConfigRecord({"blob": blob, "round": int(state["round"])})
        current = self.path
        if current.is_file():
            os.replace(current, self.state_dir / PREV_FILE)
        atomic_write_bytes(current, blob)
