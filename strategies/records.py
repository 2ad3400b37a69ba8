"""Build the global record: the shared names only, in the shared list's order."""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import ArrayRecord


def select_shared(arrays: ArrayRecord, shared_names: Sequence[str]) -> ArrayRecord:
    """Return a new ArrayRecord holding only ``shared_names``, in that order.

    Use it on the server to turn a full model record (e.g.
    ``ArrayRecord(model.state_dict())``) into the initial global record: Flower's
    server-side DP wrappers clip ``reply - global`` by position, so the global
    record must hold exactly the names the clients send back.

    Raises
    ------
    KeyError
        If a shared name is not in ``arrays``.
    """
    missing = [name for name in shared_names if name not in arrays]
    if missing:
        raise KeyError(f"shared name(s) not in the ArrayRecord: {missing[:5]}")
    return ArrayRecord({name: arrays[name] for name in shared_names})
