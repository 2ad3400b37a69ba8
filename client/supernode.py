"""``mpdrm-supernode``: Flower's ``flower-supernode`` with a shorter node heartbeat.

A site runs ``mpdrm-supernode --heartbeat-interval 10 <flower-supernode arguments>``.
Everything but the heartbeat is Flower's own SuperNode (same arguments, same transport).

Why: the SuperLink counts a node offline after two missed heartbeats, and a node it still
counts online cannot be activated again. Flower 1.42 sends one every 30 s and exposes no
option for it, so a site that crashed can rejoin only about a minute later, and a run
waits as long before it learns that the site is gone. The interval is the one a SuperNode
announces to the SuperLink when it activates and with each heartbeat (Flower's Fleet API
carries it, and the SuperLink accepts 10 to 1800 s); at 10 s a crashed site is counted
offline after about 20 s.

Only the node's heartbeat changes: the SuperNode's bookkeeping of its ClientApp tasks (and
every other Flower process) keeps Flower's own 30 s.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from flwr.common.constant import HEARTBEAT_MAX_INTERVAL as MAX_INTERVAL
from flwr.common.constant import HEARTBEAT_MIN_INTERVAL as MIN_INTERVAL

#: Modules of Flower 1.42 whose ``HEARTBEAT_DEFAULT_INTERVAL`` the node heartbeat reads at
#: call time: the Fleet connection (the interval announced) and the sender (how often).
NODE_HEARTBEAT_MODULES = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")


def set_node_heartbeat(interval: float) -> None:
    """Make this process's SuperNode announce and send heartbeats every ``interval`` s.

    Raises
    ------
    ValueError
        ``interval`` outside what the SuperLink accepts.
    RuntimeError
        The installed Flower no longer has the names this relies on.
    """
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"--heartbeat-interval {interval:g}: the SuperLink accepts "
                         f"{MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds")
    for name in NODE_HEARTBEAT_MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL"):
            raise RuntimeError(f"{name} has no HEARTBEAT_DEFAULT_INTERVAL: this Flower version "
                               "is not supported by --heartbeat-interval; use flower-supernode")
        module.HEARTBEAT_DEFAULT_INTERVAL = interval


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--heartbeat-interval``; run ``flower-supernode`` with the remaining arguments."""
    parser = argparse.ArgumentParser(
        prog="mpdrm-supernode",
        description="Flower's flower-supernode, announcing and sending node heartbeats every "
                    "--heartbeat-interval seconds (a crashed site is counted offline, and can "
                    "rejoin, after two missed heartbeats).",
        epilog="Every other argument goes to flower-supernode unchanged.")
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, metavar="SECONDS",
                        help=f"node heartbeat interval ({MIN_INTERVAL:g}-{MAX_INTERVAL:g}; "
                             "Flower's own is 30; a crashed site is counted offline after two)")
    args, rest = parser.parse_known_args(argv)
    try:
        set_node_heartbeat(args.heartbeat_interval)
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    from flwr.supernode.cli import flower_supernode  # pylint: disable=import-outside-toplevel

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
