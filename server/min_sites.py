"""The ``min-sites`` rule: a run goes on with enough sites, or fails clearly and soon.

Two places can run short of sites:

- **before a stage samples sites**: Flower's ``sample_nodes`` waits forever for
  ``min_available_nodes`` connected nodes; :func:`ensure_nodes` waits at most
  ``min-sites-wait`` seconds for them first, then ends the run;
- **after training**: fewer valid training replies than ``min-sites`` (a site died
  during the round, or its reply was rejected): :func:`train_shortfall` says why.

A connected site that never answers does not hold a round for ``round-timeout``: once
``min-sites`` valid replies are in, a stage waits at most ``round-grace`` seconds for the
others (:class:`server.loop.Deadline`) and records the missing ones as ``late``.

Both end the run by raising :class:`TooFewSites`, whose message names the minimum,
how many sites replied or are connected, and which sites are missing (sites are
named from the node id -> site id map of earlier valid replies when a reply carries
no site id, e.g. the error reply Flower sends for a dead node).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import INFO
from typing import Any

from flwr.supercore import log


class TooFewSites(RuntimeError):
    """The run cannot go on: fewer sites than ``min-sites``.

    Parameters
    ----------
    server_round : int
        The round that could not be run or aggregated (0: initial evaluation).
    stage : str
        ``"train"`` or ``"evaluate"``.
    reason : str
        The message (also the exception's text).
    """

    def __init__(self, server_round: int, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.server_round = server_round
        self.stage = stage
        self.reason = reason


def site_name(site_id: Any, names: Mapping[str, str]) -> str:
    """``site-03`` when the site's name is known (simulation), else ``site 3``."""
    return names.get(str(site_id), f"site {site_id}")


def node_label(node_id: int, node_sites: Mapping[int, int], names: Mapping[str, str]) -> str:
    """``site-03 (node 42)`` when the node was seen as a site before, else ``node 42``."""
    if node_id in node_sites:
        return f"{site_name(node_sites[node_id], names)} (node {node_id})"
    return f"unknown site (node {node_id})"


def _rejection_label(rejection: Mapping[str, Any], node_sites: Mapping[int, int], names: Mapping[str, str]) -> str:
    node_id = int(rejection.get("node_id", -1))
    if rejection.get("site_id") is not None:
        return f"{site_name(rejection['site_id'], names)} (node {node_id})"
    return node_label(node_id, node_sites, names)


def train_shortfall(
    round_log: Mapping[str, Any],
    min_sites: int,
    node_sites: Mapping[int, int],
    names: Mapping[str, str],
) -> str | None:
    """Why the round's training cannot count, or ``None`` when enough sites replied.

    Parameters
    ----------
    round_log : Mapping
        ``RoundLog.to_dict()`` of the round (``train.per_site`` keyed by site id,
        ``rejected`` with ``stage``, ``site_id``, ``node_id``, ``reason``).
    min_sites : int
        The run config's ``min-sites``.
    node_sites : Mapping[int, int]
        Node id -> site id seen in earlier valid replies.
    names : Mapping[str, str]
        Site id -> site name (empty in a deployment).

    Returns
    -------
    str or None
        E.g. ``round 2: 2 valid training replies (site 1, site 3), fewer than
        min-sites=3; missing: site 2 (node 7): error reply (...)``.
    """
    replied = sorted((round_log.get("train") or {}).get("per_site") or {}, key=_id_order)
    if len(replied) >= int(min_sites):
        return None
    rejected = [r for r in round_log.get("rejected", []) if r.get("stage") == "train"]
    missing = [f"{_rejection_label(r, node_sites, names)}: {r.get('reason', '')}" for r in rejected]
    accounted = {str(s) for s in replied} | {str(r["site_id"]) for r in rejected if r.get("site_id") is not None}
    accounted |= {str(node_sites[int(r["node_id"])]) for r in rejected
                  if r.get("site_id") is None and int(r.get("node_id", -1)) in node_sites}
    silent = sorted({str(s) for s in node_sites.values()} - accounted, key=_id_order)
    missing += [f"{site_name(s, names)}: no reply this round" for s in silent]
    who = ", ".join(site_name(s, names) for s in replied) or "none"
    return (f"round {round_log.get('round')}: {len(replied)} valid training replies ({who}), fewer than "
            f"min-sites={min_sites}; missing: {'; '.join(missing) or 'no other site known'}")


def node_shortfall(
    server_round: int,
    stage: str,
    connected: Sequence[int],
    min_sites: int,
    waited: float,
    node_sites: Mapping[int, int],
    names: Mapping[str, str],
) -> str:
    """The message of a stage that could not start: too few connected sites.

    Parameters
    ----------
    server_round : int
        The round (0: initial evaluation).
    stage : str
        ``"train"`` or ``"evaluate"``.
    connected : Sequence[int]
        Node ids connected at the end of the wait.
    min_sites : int
        The run config's ``min-sites``.
    waited : float
        Seconds waited.
    node_sites, names
        As in :func:`train_shortfall`.
    """
    online = set(int(n) for n in connected)
    missing = [node_label(n, node_sites, names) for n in sorted(node_sites) if n not in online]
    present = ", ".join(node_label(n, node_sites, names) for n in sorted(online)) or "none"
    return (f"round {server_round} {stage}: {len(online)} site(s) connected ({present}) after waiting "
            f"{waited:.0f} s (min-sites-wait), fewer than min-sites={min_sites}; missing: "
            f"{', '.join(missing) or 'no site seen yet by this run'}")


def wait_for_nodes(
    get_node_ids: Callable[[], Iterable[int]],
    need: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 1.0,
) -> tuple[list[int], float, bool]:
    """Poll ``get_node_ids`` until ``need`` nodes are connected or ``timeout`` s passed.

    Returns
    -------
    tuple[list[int], float, bool]
        The last node ids seen, the seconds waited, and whether there were enough.
    """
    start = clock()
    while True:
        ids = [int(n) for n in get_node_ids()]
        waited = clock() - start
        if len(ids) >= need:
            return ids, waited, True
        if waited >= timeout:
            return ids, waited, False
        sleep(max(0.0, min(interval, timeout - waited)))


def ensure_nodes(
    grid: Any,
    server_round: int,
    stage: str,
    min_sites: int,
    timeout: float,
    node_sites: Mapping[int, int],
    names: Mapping[str, str],
    **wait_options: Any,
) -> list[int]:
    """Wait (bounded) for ``min_sites`` connected nodes; raise :class:`TooFewSites` if not.

    Call it before a strategy's ``configure_*``: with enough nodes connected, Flower's
    node sampling returns at once instead of waiting without limit.

    Parameters
    ----------
    grid : Grid
        Anything with ``get_node_ids()``.
    server_round, stage, min_sites
        As in :func:`node_shortfall`.
    timeout : float
        The run config's ``min-sites-wait`` (seconds).
    node_sites, names
        As in :func:`train_shortfall`.
    **wait_options
        ``clock``, ``sleep``, ``interval`` of :func:`wait_for_nodes` (tests).

    Returns
    -------
    list[int]
        The connected node ids.
    """
    ids = [int(n) for n in grid.get_node_ids()]
    if len(ids) >= min_sites:
        return ids
    log(INFO, "round %d %s: %d site(s) connected, waiting up to %.0f s for min-sites=%d",
        server_round, stage, len(ids), timeout, min_sites)
    ids, waited, enough = wait_for_nodes(grid.get_node_ids, min_sites, timeout, **wait_options)
    if not enough:
        raise TooFewSites(server_round, stage,
                          node_shortfall(server_round, stage, ids, min_sites, waited, node_sites, names))
    return ids


def _id_order(site: Any) -> tuple[int, Any]:
    """Sort site ids numerically when they are numbers, else by text."""
    text = str(site)
    return (0, int(text)) if text.lstrip("-").isdigit() else (1, text)
