"""Child processes of the deployment tests: start in their own group, stop by id, no leftovers.

Flower's SuperLink and SuperNodes spawn helpers (``flower-superexec``, then one
``flwr-serverapp`` / ``flwr-clientapp`` process per task), and the SuperLink's SuperExec
starts its own session. Stopping therefore signals the whole tree, found through
``/proc`` parent links, by pid — never by process name.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        # the command name (field 2) may contain spaces: parse after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first, breadth-first)."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        nxt = todo.pop(0)
        out.append(nxt)
        todo.extend(children.get(nxt, []))
    return out


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def started_at(pid: int) -> float | None:
    """When ``pid`` started, in ``time.monotonic()`` seconds (None if gone).

    ``/proc/PID/stat`` gives the start in clock ticks since boot; the offset between the
    boot-time clock and the monotonic clock (equal unless the machine was suspended) is
    taken out.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return None
    ticks = int(stat[stat.rfind(")") + 2 :].split()[19])
    offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - offset


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class Proc:
    """One started process (and the tree below it) with its log file.

    Parameters
    ----------
    name : str
        Label used in messages.
    popen : subprocess.Popen
        The process; started with ``start_new_session=True``.
    log_path : Path
        File receiving its stdout and stderr.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        """Process id of the main process."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """Live descendants; remembered so that orphans can still be stopped later."""
        found = descendants(self.pid) if self.alive() else []
        self.seen.update(found)
        return found

    def log(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the main process to exit; its return code or None."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Signal the process and its whole tree by pid; SIGKILL what is left after ``grace``."""
        pids = [self.pid, *self.tree()]
        self.seen.update(pids)
        for pid in pids:
            _signal(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if not any(is_alive(p) for p in self.seen):
                break
            time.sleep(0.1)
        for pid in list(self.seen):
            if is_alive(pid):
                _signal(pid, signal.SIGKILL)
        self.popen.poll()
        if self.popen.returncode is None:
            self.popen.wait(timeout=5)

    def leftovers(self) -> list[int]:
        """Pids of this tree still alive (after :meth:`stop` this must be empty)."""
        return [p for p in {self.pid, *self.seen} if is_alive(p)]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` in a new session with output to ``log_path``.

    Parameters
    ----------
    name : str
        Label.
    argv : sequence of str
        Command line.
    log_path : Path
        Log file (created).
    env : mapping
        Complete environment.
    cwd : Path, optional
        Working directory.

    Returns
    -------
    Proc
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "wb")  # noqa: SIM115 (kept open by the child)
    try:
        popen = subprocess.Popen(
            list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env), cwd=cwd, start_new_session=True,
        )
    finally:
        handle.close()
    return Proc(name=name, popen=popen, log_path=log_path)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, on_fail=None):
    """Poll ``predicate()`` until it returns a truthy value; raise with ``what`` on timeout.

    Parameters
    ----------
    predicate : callable
        Returns a truthy value when done.
    timeout : float
        Seconds.
    what : str
        Description for the error message.
    interval : float
        Seconds between polls.
    on_fail : callable, optional
        Returns extra text (e.g. logs) for the error message.

    Returns
    -------
    The truthy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_fail() if on_fail else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{extra}")
        time.sleep(interval)
