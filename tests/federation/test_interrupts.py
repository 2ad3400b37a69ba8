"""Ctrl-C (SIGINT) of the harness, deterministic and without Ray (``simulations.processes``).

The cause of the intermittent ``test_ctrl_c_leaves_no_process`` failures: a process started
in the background by a non-interactive shell (``./dev test > log &``, CI runners, nohup-like
wrappers) inherits SIGINT *ignored*; Python then installs no KeyboardInterrupt handler,
every descendant (pytest, its xdist workers, ``mpdrm-simulate``, the simulation process)
inherits the ignored disposition, and the SIGINT the test sends is dropped: the run goes
on to its last round (exit 0) or past the test's 180 s. The tests here start a small
harness process with SIGINT ignored, as such a shell does (one case also without).

A second race: a SIGINT while the child is being started (inside ``subprocess.Popen``)
raised KeyboardInterrupt before the harness held the child, which then ran on, orphaned.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from simulations.processes import TOKEN_ENV, processes_with_token

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]

#: Seconds a dropped SIGINT would leave the harness (or its stand-in run) going: far more
#: than STOP_WITHIN, so a dropped signal fails by time-out however loaded the machine is.
RUNS_FOR = 600

#: Seconds the harness gets to end after SIGINT (it takes about one on an idle machine).
STOP_WITHIN = 60

#: The simulation stand-in: says it is up, then sleeps (a real run would go on for minutes).
SLEEPER = f"import time; print('child up', flush=True); time.sleep({RUNS_FOR})"

#: ``run_isolated`` on the stand-in; ``{patch}`` may wrap ``subprocess.Popen`` first.
HARNESS = textwrap.dedent("""
    import os, signal, subprocess, sys
    from simulations import processes
    {patch}
    print("harness up", flush=True)
    sys.exit(processes.run_isolated(["-c", {sleeper!r}], dict(os.environ), os.environ[{token_env!r}], grace=2.0))
""")

#: SIGINT to the harness itself right after the child is forked, inside ``Popen.__init__``.
SIGINT_DURING_START = textwrap.dedent("""
    class _InterruptedStart(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
            self.started = True  # a bytecode boundary: the handler runs here, inside __init__

    processes.subprocess.Popen = _InterruptedStart
""")


def _ignore_sigint() -> None:
    """What a non-interactive shell does to a command it starts with ``&``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(token: str, patch: str = "", ignored: bool = True) -> subprocess.Popen:
    """The harness, with SIGINT inherited ignored (``ignored``) or as Python sets it."""
    code = HARNESS.format(patch=patch, sleeper=SLEEPER, token_env=TOKEN_ENV)
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, TOKEN_ENV: token}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint if ignored else None)


def _wait_for(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        if text in line:
            return
    raise AssertionError(f"the harness ended before printing {text!r}")


def _finish(proc: subprocess.Popen, token: str) -> tuple[int, list[int]]:
    """Exit status of the harness and the run's processes still alive a moment later (all
    killed afterwards, so that a failure leaves nothing behind)."""
    try:
        status = proc.wait(timeout=STOP_WITHIN)
        time.sleep(0.5)
        return status, processes_with_token(token)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_with_token(token):
            os.kill(pid, signal.SIGKILL)


def test_sigint_inherited_ignored_still_stops_the_run() -> None:
    token = uuid.uuid4().hex
    proc = _start(token)
    _wait_for(proc, "child up")
    assert processes_with_token(token), "the child should be running"
    proc.send_signal(signal.SIGINT)
    status, left = _finish(proc, token)
    assert status == 130
    assert left == []


@pytest.mark.parametrize("ignored", [False, True], ids=["sigint-default", "sigint-inherited-ignored"])
def test_sigint_while_the_child_starts_leaves_no_process(ignored: bool) -> None:
    token = uuid.uuid4().hex
    proc = _start(token, patch=SIGINT_DURING_START, ignored=ignored)
    status, left = _finish(proc, token)
    assert left == [], f"orphaned: {left}"
    assert status == 130


def test_sigint_before_the_child_ends_the_harness() -> None:
    """``mpdrm-simulate`` honours SIGINT from its first line (cohort preparation included)."""
    code = ("import time; from simulations.processes import honour_sigint; honour_sigint(); "
            f"print('harness up', flush=True); time.sleep({RUNS_FOR})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_ignore_sigint)
    token = uuid.uuid4().hex
    _wait_for(proc, "harness up")
    proc.send_signal(signal.SIGINT)
    status, _ = _finish(proc, token)
    assert status == -signal.SIGINT  # an uncaught KeyboardInterrupt ends Python by SIGINT
