"""The site's private state: kept in ``context.state`` and on disk, written atomically.

The state is a plain dict of data (no objects)::

    {"round": int,                 # last completed training round at this site
     "local": {name: Tensor},      # parameters that never leave the site
     "optimizer": dict | None,     # local optimizer state
     "dp": dict | None,            # DP accountant history (client-side DP)
     "site": str}                  # the site's folder name

It lives in ``STATE_DIR/site_state.safetensors`` (:mod:`mpdrm.tensorfile`: data only, never
executed when read back); the previous version is kept as ``site_state.prev.safetensors`` so
that a server resumed from round ``k`` finds the site's state of round ``k`` even if the site
had already trained round ``k + 1``, and so that a damaged current file (a torn write, a full
disk) falls back to the previous state with a WARNING. A ``site_state.pt`` of an older version
(a pickle) is refused, never loaded.

Only the round and the DP ledger are also kept in Flower's ``context.state`` (a few hundred
bytes): while the node lives, a damaged current file cannot make the site forget the privacy
steps it took (:meth:`SiteStateStore.candidates`). The weights and optimizer moments stay on
disk only: in a simulation the engine, i.e. the coordinator's process, holds every site's
``context`` and ships it to the ClientApp and back with every message, and the whole state
there (29 MB a site for ``tiny``) made its memory grow by about 45 MiB per site
(docs/benchmarks.md, "Scale").
"""
from __future__ import annotations

from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.supercore import log

from mpdrm import tensorfile
from mpdrm.persistence import atomic_write_bytes, capture_rng, restore_rng, seed_all
from mpdrm.tensorfile import TensorFileError

__all__ = ["LEGACY_FILES", "PREV_FILE", "STATE_FILE", "SiteStateError", "SiteStateStore", "capture_rng",
           "restore_rng", "seed_all"]

STATE_FILE = "site_state.safetensors"
PREV_FILE = "site_state.prev.safetensors"
LEGACY_FILES = ("site_state.pt", "site_state.prev.pt")  # pickles of older versions: refused
CONTEXT_KEY = "mpdrm-site-state"


class SiteStateError(RuntimeError):
    """The site's state on disk cannot be used (an older pickle, or every file damaged)."""


def _check_state(tree: Any, source: str) -> dict[str, Any]:
    if not isinstance(tree, dict) or not isinstance(tree.get("round"), int):
        raise TensorFileError(f"{source}: not a FedMPDRM site state (no integer 'round')")
    return tree


class SiteStateStore:
    """Load and save one site's private state (disk; its DP ledger also in ``context.state``)."""

    def __init__(self, state_dir: Path, context: Context) -> None:
        self.state_dir = Path(state_dir)
        self.context = context
        self._warned: set[str] = set()

    @property
    def path(self) -> Path:
        """The current state file."""
        return self.state_dir / STATE_FILE

    def _ledger(self) -> dict[str, Any] | None:
        """``{"round", "dp"}`` of the newest state saved by this node process, or ``None``."""
        if CONTEXT_KEY not in self.context.state:
            return None
        blob = self.context.state[CONTEXT_KEY]["blob"]
        return _check_state(tensorfile.loads(bytes(blob), "context.state[mpdrm-site-state]"), "context.state")

    def _refuse_legacy(self) -> None:
        for name in LEGACY_FILES:
            old = self.state_dir / name
            if old.is_file():
                raise SiteStateError(
                    f"{old}: site state written by an older version of FedMPDRM (a pickle); not loaded: "
                    f"pickled files can run code. Start a new run (or move the file away to start this "
                    f"site without its private state)")

    def _read_files(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The readable state files and the problems of the unreadable ones."""
        found: list[dict[str, Any]] = []
        problems: list[str] = []
        for name in (STATE_FILE, PREV_FILE):
            file = self.state_dir / name
            if not file.is_file():
                continue
            try:
                found.append(_check_state(tensorfile.load(file), str(file)))
            except (TensorFileError, OSError) as err:
                problems.append(str(err))
        return found, problems

    def _warn(self, problems: list[str], kept: list[dict[str, Any]]) -> None:
        for problem in problems:
            if problem in self._warned:
                continue
            self._warned.add(problem)
            rounds = ", ".join(str(s["round"]) for s in kept) or "none"
            log(WARNING, "site state %s; ignored, continuing from the readable state (rounds: %s). Under "
                "client-side DP the privacy ledger of the rounds it held may be missing", problem, rounds)

    def _states(self) -> list[dict[str, Any]]:
        """The readable state files, current first; a WARNING per damaged one."""
        found, problems = self._read_files()
        if not found and not problems:
            self._refuse_legacy()
        if problems and not found:
            raise SiteStateError(f"no readable site state in {self.state_dir}: " + "; ".join(problems))
        self._warn(problems, found)
        return found

    def candidates(self) -> list[dict[str, Any]]:
        """Every saved state the site can read, for its newest DP ledger: the round and ledger
        kept in ``context.state`` (no weights), then the current and previous file.

        A damaged file is skipped with a WARNING naming it; :class:`SiteStateError` when
        files exist but none is readable, or only an older version's pickle is there.
        """
        ledger = self._ledger()
        return ([ledger] if ledger is not None else []) + self._states()

    def load(self, server_round: int | None = None) -> dict[str, Any] | None:
        """The state to continue from before ``server_round``.

        Prefers a state whose ``round`` is ``server_round - 1``; otherwise the newest one
        older than ``server_round``; ``None`` when the site has no usable state (with a
        WARNING when it has states, all of later rounds).
        """
        states = self._states()
        if not states:
            return None
        if server_round is None:
            return max(states, key=lambda s: s["round"])
        exact = [s for s in states if s["round"] == server_round - 1]
        if exact:
            return exact[0]
        older = [s for s in states if s["round"] < server_round]
        if not older:
            log(WARNING, "site state in %s holds rounds %s only, none before round %d (the server resumed from "
                "an older checkpoint): round %d starts without this site's private state", self.state_dir,
                ", ".join(str(s["round"]) for s in states), server_round, server_round)
            return None
        return max(older, key=lambda s: s["round"])

    def _current_round(self) -> int | None:
        """The round of the current file; ``None`` when it is missing or unreadable."""
        try:
            return int(_check_state(tensorfile.load(self.path), str(self.path))["round"])
        except (TensorFileError, OSError):
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Keep ``state``'s round and DP ledger in ``context.state`` and write it atomically to disk.

        The file it replaces becomes ``site_state.prev.safetensors`` once the new one is
        completely written, so a failed write leaves both files as they were. It is kept
        only when it is readable and of another round: a round trained again (the server
        resumed before checkpointing it) replaces its first state and keeps the state before
        it, and a damaged file never displaces a good previous state.
        """
        blob = tensorfile.dumps(state)
        ledger = tensorfile.dumps({"round": int(state["round"]), "dp": state.get("dp")})
        self.context.state[CONTEXT_KEY] = ConfigRecord({"blob": ledger, "round": int(state["round"])})
        current = self._current_round()
        keep = self.state_dir / PREV_FILE if current is not None and current != int(state["round"]) else None
        atomic_write_bytes(self.path, blob, keep_previous=keep)
