"""Byte accounting of the arrays carried by Flower messages.

The unit is Flower's own :meth:`flwr.app.ArrayRecord.count_bytes`: for every array the
length of its serialized payload (``Array.data``: the ``.npy`` bytes, i.e. the raw
tensor bytes plus the small NumPy header) plus the length of its name. Protobuf
framing, message metadata, ConfigRecords and MetricRecords are not counted: they are
small and constant next to the model.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict


def record_bytes(content: RecordDict) -> int:
    """Return the array bytes of every ArrayRecord in ``content``.

    Parameters
    ----------
    content : RecordDict
        The content of a message.

    Returns
    -------
    int
        Sum of ``ArrayRecord.count_bytes()`` over the ArrayRecords of ``content``.
    """
    return sum(record.count_bytes() for record in content.array_records.values())


def message_bytes(message: Message) -> int:
    """Return the array bytes a message carries (0 for an error reply)."""
    if not message.has_content():
        return 0
    return record_bytes(message.content)


def total_bytes(messages: Iterable[Message]) -> int:
    """Return the array bytes of all ``messages`` (each message counted once)."""
    return sum(message_bytes(message) for message in messages)
