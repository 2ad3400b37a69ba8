"""What a federation does, seen from outside: timestamped events from logs and run files.

A :class:`Watcher` is polled by the driver. It reads each site's SuperNode logs (Flower
logs ``Receiving: train message`` and ``Sending: train message`` for every message), the
sites' private state files and the coordinator's checkpoint, and turns every new line or
file version into an :class:`Event` stamped with the time it was first seen (polling
every 0.2 s: about that accurate). A message's round is the one after the newest
checkpoint seen (:meth:`Segment.round_of`).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from client.state import STATE_FILE
from mpdrm import tensorfile
from server.checkpoint import CHECKPOINT_FILE

MESSAGE_LINE = re.compile(r"(Receiving|Sending): (train|evaluate) message")


@dataclass(frozen=True)
class Event:
    """Something the federation did.

    Attributes
    ----------
    at : float
        ``time.monotonic()`` when it was first seen.
    who : str
        A site label, or ``coordinator``.
    kind : str
        ``received`` / ``sent`` (a message), ``saved`` (site state), ``checkpoint``.
    stage : str
        ``train`` / ``evaluate`` (messages), else ``""``.
    round : int
        Server round.
    """

    at: float
    who: str
    kind: str
    stage: str
    round: int


def _readable_round(path: Path) -> int | None:
    try:
        return int(tensorfile.load(path)["round"])
    except Exception:  # noqa: BLE001 (missing, being replaced, or truncated on purpose)
        return None


@dataclass
class Segment:
    """One run (a new run or a resume) and where it stands.

    Attributes
    ----------
    first_round : int
        The run's first training round.
    initial_eval : bool
        Whether it evaluates the untrained model first (a new run with evaluation).
    checkpointed : int
        The newest round checkpointed in this run (``first_round - 1`` at its start).
    trained : bool
        Whether a site received a training message of this run yet.
    started : float
        ``time.monotonic()`` when the run was started.
    """

    first_round: int
    initial_eval: bool
    checkpointed: int = 0
    trained: bool = False
    started: float = 0.0

    def round_of(self, stage: str) -> int:
        """The round of a message seen now: the one after the newest checkpoint (an
        evaluation of a new run before any training: round 0)."""
        if stage == "evaluate" and self.initial_eval and not self.trained:
            return self.first_round - 1
        return self.checkpointed + 1


class Watcher:
    """Turns logs and files into :class:`Event` s.

    Parameters
    ----------
    logs : callable
        Site label -> the text of its SuperNode logs, oldest first (deployment); ``None``
        in a simulation (no per-site logs).
    state_dirs : Mapping
        Site label -> its private state folder.
    run_dir : Path
        The coordinator's run folder (``checkpoint.safetensors``).
    """

    def __init__(self, logs: Callable[[str], str] | None, state_dirs: Mapping[str, Path], run_dir: Path) -> None:
        self.logs, self.state_dirs, self.run_dir = logs, dict(state_dirs), Path(run_dir)
        self.events: list[Event] = []
        self.segment = Segment(1, False)
        self._lines: dict[str, int] = {}
        self._mtimes: dict[Path, int] = {}
        self._started = False

    def new_segment(self, first_round: int, initial_eval: bool) -> None:
        """A run starts: its sites' messages count from here (what the logs and files
        held before the first segment is history, not events)."""
        new = self.poll()
        if not self._started:
            self.events = [e for e in self.events if e not in new]
            self._started = True
        self.segment = Segment(first_round, initial_eval, first_round - 1, started=time.monotonic())

    def poll(self) -> list[Event]:
        """Read everything once; returns the new events."""
        now = time.monotonic()
        # files first: a round's checkpoint is on disk before any message of the next round
        new = self._files(now)
        new += self._messages(now)
        self.events.extend(new)
        return new

    def _messages(self, now: float) -> list[Event]:
        out: list[Event] = []
        for site in self.state_dirs if self.logs is not None else ():
            lines = MESSAGE_LINE.findall(self.logs(site))
            for verb, stage in lines[self._lines.get(site, 0):]:
                self.segment.trained |= stage == "train" and verb == "Receiving"
                kind = "received" if verb == "Receiving" else "sent"
                out.append(Event(now, site, kind, stage, self.segment.round_of(stage)))
            self._lines[site] = len(lines)
        return out

    def _changed(self, path: Path) -> bool:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return False
        if self._mtimes.get(path) == mtime:
            return False
        self._mtimes[path] = mtime
        return True

    def _files(self, now: float) -> list[Event]:
        out: list[Event] = []
        watched = [(site, "saved", d / STATE_FILE) for site, d in self.state_dirs.items()]
        for who, kind, path in [*watched, ("coordinator", "checkpoint", self.run_dir / CHECKPOINT_FILE)]:
            if self._changed(path):
                rnd = _readable_round(path)
                if rnd is not None:
                    out.append(Event(now, who, kind, "", rnd))
                    if kind == "checkpoint":
                        self.segment.checkpointed = rnd
        return out

    def find(self, kind: str, who: str = "", stage: str = "", rnd: int | None = None,
             after: float = float("-inf")) -> Event | None:
        """The first event matching every given field, seen after ``after``."""
        for event in self.events:
            if (event.kind == kind and event.at > after and (not who or event.who == who)
                    and (not stage or event.stage == stage) and (rnd is None or event.round == rnd)):
                return event
        return None

    def previous_reply(self, who: str, before: float) -> float:
        """When ``who`` was last seen sending a reply before ``before`` (the run's start if
        never): a ClientApp started later serves a newer message."""
        times = [e.at for e in self.events if e.kind == "sent" and e.who == who and e.at < before]
        return max(times, default=self.segment.started)

    def stage_closed(self, after: float, busy: set[str], stage: str, rnd: int) -> Event | None:
        """The first instruction of another stage than (``stage``, ``rnd``) that a site not
        in ``busy`` received after ``after``: that stage was closed by then."""
        for event in self.events:
            if (event.kind == "received" and event.at > after and event.who not in busy
                    and (event.stage, event.round) != (stage, rnd)):
                return event
        return None
