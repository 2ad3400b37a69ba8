"""Deterministic reply order: by the integer site id each client reports.

Node ids are random per run and replies arrive in any order; sorting by site id fixes
the floating-point summation order, so aggregates are bit-identical across runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from flwr.app import Message

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
