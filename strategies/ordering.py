"""Deterministic reply order: by the integer site id each client reports.

Node ids are random per run and replies arrive in any order; sorting by site id fixes
the floating-point summation order, so aggregates are bit-identical across runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from flwr.app import Message

from mpdrm.contract.keys import SITE, SITE_NAME

from .validation import metric_record


def site_id_of(message: Message, key: str = "site-id") -> int:
    """Return the site id of a validated reply."""
    return int(metric_record(message.content)[key])  # type: ignore[arg-type]


def sort_by_site_id(messages: Iterable[Message], key: str = "site-id") -> list[Message]:
    """Return validated replies sorted by site id (ascending)."""
    return sorted(messages, key=lambda message: site_id_of(message, key))


def duplicate_site_ids(messages: Iterable[Message], key: str = "site-id") -> set[int]:
    """Return the site ids reported by more than one reply."""
    counts = Counter(site_id_of(message, key) for message in messages)
    return {site for site, count in counts.items() if count > 1}


def node_sites(messages: Iterable[Message], key: str = "site-id") -> dict[int, int]:
    """Return ``{node id: site id}`` of validated replies (where each site was seen)."""
    return {int(message.metadata.src_node_id): site_id_of(message, key) for message in messages}


def reported_site_names(messages: Iterable[Message], key: str = "site-id") -> dict[str, str]:
    """Return ``{site id (str): name}`` of validated replies that carry a ``site`` ConfigRecord.

    Simulated sites report their folder name; deployed sites report none (then the
    coordinator names them by id).
    """
    names: dict[str, str] = {}
    for message in messages:
        record = message.content.config_records.get(SITE)
        name = record.get(SITE_NAME) if record is not None else None
        if isinstance(name, str) and name:
            names[str(site_id_of(message, key))] = name
    return names


def site_label(site_id: int | None, node_id: int, known: Mapping[int, int]) -> str:
    """Name the site behind a reply for a log line: ``site 3 (node 42)``.

    Parameters
    ----------
    site_id : int or None
        The site id the reply reported (``None``: none, e.g. an error reply).
    node_id : int
        The Flower node id the reply came from.
    known : Mapping[int, int]
        Node id -> site id seen in earlier valid replies.

    Returns
    -------
    str
        ``site N (node M)``; ``site N (node M, seen earlier)`` when the id comes from
        ``known``; ``unknown site (node M)`` when neither names it.
    """
    if site_id is not None:
        return f"site {site_id} (node {node_id})"
    if node_id in known:
        return f"site {known[node_id]} (node {node_id}, seen earlier)"
    return f"unknown site (node {node_id})"


def instruction_nodes(instructions: Iterable[Message]) -> dict[str, int]:
    """Return ``{message id: destination node id}`` of sent instructions (ids set on push)."""
    out: dict[str, int] = {}
    for message in instructions:
        message_id = message.metadata.__dict__.get("_message_id") or ""
        if message_id:
            out[str(message_id)] = int(message.metadata.dst_node_id)
    return out


def reply_node_id(reply: Message, instructions: Mapping[str, int]) -> int:
    """The node a reply stands for.

    Flower's SuperLink answers for a dead node itself: that error reply comes from the
    SuperLink's node id, so the node is found through the instruction it replies to.
    """
    return instructions.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))
