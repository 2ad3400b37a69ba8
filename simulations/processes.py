"""Run the simulation in a child process and leave nothing running afterwards.

The child gets its own session (Ctrl-C reaches only the harness, which then stops the
child's whole process group) and an environment marker ``FEDMPDRM_RUN_TOKEN`` that every
descendant inherits (Ray's raylet, GCS, workers and ClientApp actors included), so the
harness can find and end every process of the run by its id, even reparented ones.
SIGINT stops the run even when the harness inherited it ignored, and even when it comes
while the child is being started (see ``_StopSignals``).

The child runs our code whatever folder the user is in: it starts with ``python -P`` (the
current folder is not put first on ``sys.path``) in an empty temporary folder as its
working directory, because Ray puts the driver's working directory first on every
worker's ``sys.path`` (``ray._private.worker``: ``py_driver_sys_path``). Otherwise a
folder named ``mpdrm``, ``client``, ... where ``mpdrm-simulate`` is started would shadow
our packages in the simulation process and in the sites' Ray workers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TOKEN_ENV = "FEDMPDRM_RUN_TOKEN"

#: The signals that stop a run (Ctrl-C, and ``kill``'s default).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def new_token() -> str:
    """The run's process marker (``FEDMPDRM_RUN_TOKEN`` from the environment if set)."""
    return os.environ.get(TOKEN_ENV) or uuid.uuid4().hex


def processes_with_token(token: str) -> list[int]:
    """Live processes (zombies excluded) whose environment carries ``token``."""
    marker = f"{TOKEN_ENV}={token}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def sweep(token: str, grace: float = 5.0) -> list[int]:
    """SIGTERM then SIGKILL every process of the run still alive; returns those found."""
    pids = processes_with_token(token)
    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and processes_with_token(token):
        time.sleep(0.2)
    _signal_all(processes_with_token(token), signal.SIGKILL)
    return pids


def _stop_group(child: subprocess.Popen, grace: float) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the child's process group."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if child.poll() is not None:
            return
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


class _StopSignals:
    """SIGINT and SIGTERM as KeyboardInterrupt, raised only while armed.

    Installed for SIGINT even when the process inherited it ignored (as a non-interactive
    shell leaves every command it starts with ``&``: ``./dev test > log &``, CI runners):
    Python then installs no KeyboardInterrupt handler, and an explicit SIGINT, the test's
    "Ctrl-C", was dropped while the run went on. Installing a handler also gives the child
    SIGINT back (``exec`` resets handled signals to their default, keeps ignored ones).

    A signal while unarmed (the child is being started, or stopped) is only recorded:
    :meth:`arm` raises it once the child is held, and a second Ctrl-C cannot cut the
    clean-up short.
    """

    def __init__(self) -> None:
        self.armed = False
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt(f"signal {signum}")

    def arm(self) -> None:
        """From now on a stop signal raises KeyboardInterrupt (at once if one came already)."""
        self.armed = True
        if self.received is not None:
            self._handle(self.received, None)

    def disarm(self) -> None:
        """From now on a stop signal is only recorded."""
        self.armed = False

    def __enter__(self) -> _StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()
        for sig, previous in self._previous.items():
            if previous is not None:  # None: a handler not set from Python, left as is
                signal.signal(sig, previous)


def honour_sigint() -> None:
    """SIGINT raises KeyboardInterrupt in this process even if it was inherited ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_isolated(args: Sequence[str], env: Mapping[str, str], token: str, grace: float = 5.0) -> int:
    """Run ``python -P <args>`` in its own session; always clean up the whole run.

    The child's working directory is an empty temporary folder (removed afterwards), so
    every path it is given must be absolute. SIGINT and SIGTERM (also one inherited
    ignored, also one that comes while the child is being started) stop the child's
    process group, then every process of the run (:func:`sweep`). Must be called from the
    main thread.

    Parameters
    ----------
    args : sequence of str
        Arguments after ``python -P``.
    env : Mapping
        Environment of the child (``FEDMPDRM_RUN_TOKEN`` is added).
    token : str
        The run's process marker.
    grace : float
        Seconds the child gets to stop after SIGINT and after SIGTERM.

    Returns
    -------
    int
        The child's exit status (130 after SIGINT or SIGTERM).
    """
    child_env = {**env, TOKEN_ENV: token}
    with tempfile.TemporaryDirectory(prefix="fedmpdrm-child-") as workdir, _StopSignals() as stop:
        child = subprocess.Popen([sys.executable, "-P", *args], env=child_env, cwd=workdir, start_new_session=True)
        try:
            stop.arm()
            return child.wait()
        except KeyboardInterrupt:
            print("\n[fedmpdrm] interrupted: stopping the simulation", file=sys.stderr, flush=True)
            _stop_group(child, grace)
            return 130
        finally:
            stop.disarm()
            if child.poll() is None:
                _stop_group(child, grace)
            sweep(token)
