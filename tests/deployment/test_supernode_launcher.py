"""``mpdrm-supernode``'s own checks (the heartbeat it sets is checked on a real SuperLink in
``test_site_failure.py``: the SuperLink records each node's announced interval)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from client import supernode


@pytest.mark.parametrize("interval", [9.9, 1801.0, 0.0])
def test_an_interval_the_superlink_would_refuse_is_refused_before_starting(interval: float) -> None:
    with pytest.raises(ValueError, match="10 to 1800 seconds"):
        supernode.set_node_heartbeat(interval)
    res = subprocess.run([sys.executable, "-m", "client.supernode", "--heartbeat-interval", str(interval),
                          "--superlink", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "the SuperLink accepts 10 to 1800 seconds" in res.stderr


def test_the_node_heartbeat_reads_the_interval_set(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = [importlib.import_module(name) for name in supernode.NODE_HEARTBEAT_MODULES]
    for module in modules:  # restored afterwards
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    supernode.set_node_heartbeat(12.5)
    assert [m.HEARTBEAT_DEFAULT_INTERVAL for m in modules] == [12.5, 12.5]
    # Flower's task bookkeeping (ClientApp tokens) keeps its own constant
    from flwr.common import constant
    assert constant.HEARTBEAT_DEFAULT_INTERVAL == 30
