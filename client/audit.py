"""A Flower mod that records every outbound client message (privacy audit).

Attached to the ClientApp, it writes one JSON line per reply to
``AUDIT_DIR/<pid>.jsonl``: message type, site id, and the name, shape, dtype and byte
size of every array the site sends. It records, it never changes the reply.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod


def outbound_record(reply: Message) -> dict:
    """What a reply carries, as a JSON-ready dict."""
    entry: dict = {"type": reply.metadata.message_type, "error": reply.has_error(), "arrays": {}, "metrics": {}}
    if reply.has_content():
        for key, record in reply.content.array_records.items():
            for name, array in record.items():
                entry["arrays"][f"{key}/{name}"] = {"shape": list(array.shape), "dtype": array.dtype, "bytes": len(array.data)}
        for key, record in reply.content.metric_records.items():
            entry["metrics"].update({f"{key}/{k}": v for k, v in record.items()})
        entry["configs"] = sorted(reply.content.config_records)
    return entry


def audit_mod(audit_dir: str | os.PathLike) -> Mod:
    """A mod appending :func:`outbound_record` of every reply under ``audit_dir``."""
    folder = str(audit_dir)

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(outbound_record(reply)) + "\n")
        return reply

    return mod
