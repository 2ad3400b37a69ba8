"""``mpdrm-superlink``: Flower's ``flower-superlink`` with a longer SQLite busy timeout.

The coordinator runs ``mpdrm-superlink --sqlite-busy-timeout 60 <flower-superlink arguments>``.
Everything but that timeout is Flower's own SuperLink (same arguments, same transport, same
``--database`` file).

Why: with ``--database FILE`` the SuperLink keeps its state in SQLite, one connection per
thread, and Flower 1.42 lets a connection wait only 5 s for another's write lock
(``PRAGMA busy_timeout = 5000``; not configurable). On a loaded coordinator - measured on a
2-core machine running three sites' training beside it - a writer is descheduled for longer,
the waiting request fails with ``database is locked``, the SuperLink answers HTTP 500, and a
site's reply upload or a ServerApp's task is lost: the round then fails by ``min-sites``.
Waiting longer costs nothing when the database is free.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: The module of Flower 1.42 whose ``SQLITE_PRAGMAS`` every new SQLite connection reads.
PRAGMA_MODULE = "flwr.supercore.sql_mixin"
DEFAULT_BUSY_TIMEOUT = 60.0


def set_sqlite_busy_timeout(seconds: float) -> None:
    """Make every SQLite connection this process's SuperLink opens wait up to ``seconds``
    for a lock before failing.

    Raises
    ------
    ValueError
        ``seconds`` not positive.
    RuntimeError
        The installed Flower no longer has the names this relies on.
    """
    if not seconds > 0:
        raise ValueError(f"--sqlite-busy-timeout {seconds:g}: must be > 0 seconds")
    module = importlib.import_module(PRAGMA_MODULE)
    pragmas = getattr(module, "SQLITE_PRAGMAS", None)
    if not pragmas or "busy_timeout" not in dict(pragmas):
        raise RuntimeError(f"{PRAGMA_MODULE} has no SQLITE_PRAGMAS with a busy_timeout: this "
                           "Flower version is not supported by mpdrm-superlink; use flower-superlink")
    module.SQLITE_PRAGMAS = tuple((name, str(round(seconds * 1000)) if name == "busy_timeout" else value)
                                  for name, value in pragmas)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--sqlite-busy-timeout``; run ``flower-superlink`` with the remaining arguments."""
    parser = argparse.ArgumentParser(
        prog="mpdrm-superlink",
        description="Flower's flower-superlink, its SQLite connections waiting up to "
                    "--sqlite-busy-timeout seconds for a lock (Flower's own: 5).",
        epilog="Every other argument goes to flower-superlink unchanged.")
    parser.add_argument("--sqlite-busy-timeout", type=float, default=DEFAULT_BUSY_TIMEOUT,
                        metavar="SECONDS", help=f"lock wait per SQLite request (default "
                                                f"{DEFAULT_BUSY_TIMEOUT:g}; Flower's own is 5)")
    args, rest = parser.parse_known_args(argv)
    try:
        set_sqlite_busy_timeout(args.sqlite_busy_timeout)
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    from flwr.superlink.cli import flower_superlink  # pylint: disable=import-outside-toplevel

    sys.argv = ["flower-superlink", *rest]
    flower_superlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
