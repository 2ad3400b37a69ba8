"""``mpdrm-superlink``: Flower's SuperLink whose SQLite connections wait longer for a lock.

The behaviour that matters is checked on real SuperLinks: while another connection holds the
database's write lock for longer than Flower's 5 s, registering a site fails on
``flower-superlink`` and succeeds, once the lock is released, on ``mpdrm-superlink``.
"""
from __future__ import annotations

import importlib
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from deploylib.harness import CONNECTION, Deployment
from server import superlink

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

HOLD = 9.0   # seconds the test holds the write lock: more than Flower's own 5 s


def test_a_timeout_that_is_not_positive_is_refused_before_starting() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        superlink.set_sqlite_busy_timeout(0)
    res = subprocess.run([sys.executable, "-m", "server.superlink", "--sqlite-busy-timeout", "-1",
                          "--port", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "must be > 0 seconds" in res.stderr


def test_every_new_connection_gets_the_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = importlib.import_module(superlink.PRAGMA_MODULE)
    monkeypatch.setattr(module, "SQLITE_PRAGMAS", module.SQLITE_PRAGMAS)   # restored afterwards
    assert dict(module.SQLITE_PRAGMAS)["busy_timeout"] == "5000"          # Flower's own
    superlink.set_sqlite_busy_timeout(42.5)
    assert dict(module.SQLITE_PRAGMAS)["busy_timeout"] == "42500"
    with closing(sqlite3.connect(tmp_path / "x.db")) as db:
        module._set_sqlite_pragmas(db, None)      # what Flower runs on each new connection
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 42500


def _register_while_locked(dep: Deployment, site: str, hold: float | None) -> tuple[bool, float, str]:
    """Hold the SuperLink database's write lock for ``hold`` s (None: until the registration
    has returned, however long the command takes to start) while registering ``site``;
    (registered, seconds the registration took, its output)."""
    locked, returned = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with closing(sqlite3.connect(dep.database, timeout=30)) as db:
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            if hold is None:
                returned.wait(150)
            else:
                time.sleep(hold)
            db.rollback()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(30)
    start = time.monotonic()
    try:
        res = dep.cli("flwr", "supernode", "register", str(dep.site_keys[site].public_key),
                      CONNECTION, "--name", site, "--format", "json", check=False, timeout=120)
    finally:
        returned.set()
        took = time.monotonic() - start
        holder.join()
    return res.returncode == 0 and '"node-id"' in res.stdout, took, res.stdout + res.stderr


@pytest.mark.parametrize("busy_timeout", [None, 60.0], ids=["flower-superlink", "mpdrm-superlink"])
def test_a_write_waits_for_a_long_held_lock(tmp_path: Path, busy_timeout: float | None) -> None:
    """Flower's SuperLink gives up on a lock held past its 5 s (the lock is held until the
    command returns, so a slow start of the command on a loaded machine cannot outlast it);
    ``mpdrm-superlink`` waits for a lock held :data:`HOLD` s and then registers the site."""
    dep = Deployment(tmp_path / "link", num_site_keys=1)
    try:
        dep.start_superlink(busy_timeout=busy_timeout)
        if busy_timeout is None:          # Flower's 5 s: the request fails while locked
            registered, took, out = _register_while_locked(dep, "site-01", hold=None)
            assert not registered and took < 30, (took, out)   # gave up by itself, long before 60 s
        else:
            registered, took, out = _register_while_locked(dep, "site-01", hold=HOLD)
            assert registered and took >= HOLD - 1.0, (took, out)
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"
