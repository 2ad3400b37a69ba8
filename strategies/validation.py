"""Reply validation: pure checks that return a rejection reason or ``None``.

Every check looks at one aspect of a reply. :func:`validate_train_reply` and
:func:`validate_evaluate_reply` run them in a fixed order and return the first reason
found, so a reply that leaks a site-local tensor is always reported as a leak.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from mpdrm.contract.keys import DECLINED, DECLINED_REASON
from mpdrm.contract.names import LOCAL_PREFIX

from .packing import LAYOUT_PREFIX, is_packed, unpack_content

ArraySpec = tuple[tuple[int, ...], str]
"""(shape, dtype) of one global array."""

_MAX_NAMES = 5


def _names(names: Iterable[str]) -> str:
    """Format a sorted, truncated list of names for a log line."""
    ordered = sorted(names)
    shown = ", ".join(ordered[:_MAX_NAMES])
    if len(ordered) > _MAX_NAMES:
        shown += f" (and {len(ordered) - _MAX_NAMES} more)"
    return shown


def check_error(message: Message) -> str | None:
    """Reject an error reply, quoting the error it carries."""
    if message.has_error():
        return f"error reply (code {message.error.code}): {message.error.reason}"
    if not message.has_content():
        return "reply has neither content nor error"
    return None


DECLINED_RECORD = DECLINED
"""ConfigRecord of a reply by which a site declines the round (with a ``reason``),
e.g. because training it would exceed the site's privacy budget."""


def check_declined(content: RecordDict) -> str | None:
    """Report a site's explicit refusal of the round, quoting its reason."""
    record = content.config_records.get(DECLINED_RECORD)
    if record is None:
        return None
    return f"declined by the site: {record.get(DECLINED_REASON, 'no reason given')}"


def check_local_leak(
    content: RecordDict, local_prefix: str | None = LOCAL_PREFIX
) -> str | None:
    """Reject a reply whose arrays (in any ArrayRecord) include site-local names
    (``local_prefix=None``: no name is site-local)."""
    if local_prefix is None:
        return None
    names = [name for record in content.array_records.values() for name in record.keys()]
    names += [str(name) for key, record in content.config_records.items()
              if key.startswith(LAYOUT_PREFIX) for name in record.get("names", [])]
    leaked = [name for name in names if name.startswith(local_prefix)]
    if leaked:
        return (
            f"carries {len(leaked)} site-local '{local_prefix}*' tensor(s) that must "
            f"never leave a site: {_names(leaked)}"
        )
    return None


def check_packing(content: RecordDict) -> str | None:
    """Reject a reply whose packed arrays (``strategies.packing``) do not match their layout
    (the server unpacks every reply it can; one left packed is truncated or tampered)."""
    if not is_packed(content):
        return None
    try:
        unpack_content(content)
    except ValueError as error:
        return f"its packed arrays do not match their layout: {error}"
    return "its arrays are still packed"


def check_structure(content: RecordDict, expect_arrays: bool) -> str | None:
    """Require one MetricRecord and, for training replies, exactly one ArrayRecord.

    Extra ConfigRecords are allowed (Flower's own reply check ignores them too).
    """
    if expect_arrays and len(content.array_records) != 1:
        return (
            f"expected exactly one ArrayRecord, found {len(content.array_records)}"
        )
    if len(content.metric_records) != 1:
        return (
            f"expected exactly one MetricRecord, found {len(content.metric_records)}"
        )
    return None


def metric_record(content: RecordDict) -> MetricRecord:
    """Return the single MetricRecord of a reply (after :func:`check_structure`)."""
    return next(iter(content.metric_records.values()))


def array_record(content: RecordDict) -> ArrayRecord:
    """Return the single ArrayRecord of a training reply."""
    return next(iter(content.array_records.values()))


def check_site_id(metrics: MetricRecord, key: str = "site-id") -> str | None:
    """Require a non-negative integer site id."""
    if key not in metrics:
        return f"missing '{key}' in the MetricRecord"
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"'{key}' must be a non-negative int, got {value!r}"
    return None


def check_num_examples(metrics: MetricRecord, key: str = "num-examples") -> str | None:
    """Require a positive, finite number of examples."""
    if key not in metrics:
        return f"missing '{key}' in the MetricRecord"
    value = metrics[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        return f"'{key}' must be a positive number, got {value!r}"
    return None


def check_names(
    names: Collection[str], shared_names: Collection[str]
) -> str | None:
    """Require exactly the shared names: nothing outside the list, nothing missing."""
    unexpected = set(names) - set(shared_names)
    if unexpected:
        return (
            f"{len(unexpected)} name(s) outside the shared list: {_names(unexpected)}"
        )
    missing = set(shared_names) - set(names)
    if missing:
        return f"{len(missing)} shared name(s) missing: {_names(missing)}"
    return None


def check_specs(record: ArrayRecord, reference: Mapping[str, ArraySpec]) -> str | None:
    """Require every array to have the shape and dtype of the current global array."""
    for name, array in record.items():
        if name not in reference:
            continue
        shape, dtype = reference[name]
        if tuple(array.shape) != tuple(shape):
            return (
                f"shape mismatch for '{name}': got {tuple(array.shape)}, "
                f"expected {tuple(shape)}"
            )
        if array.dtype != dtype:
            return f"dtype mismatch for '{name}': got {array.dtype}, expected {dtype}"
    return None


def check_finite(record: ArrayRecord) -> str | None:
    """Reject NaN or Inf values in any array."""
    for name, array in record.items():
        values = array.numpy()
        if np.issubdtype(values.dtype, np.inexact) and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            return f"{bad} non-finite value(s) (NaN or Inf) in '{name}'"
    return None


def _check_envelope(
    message: Message,
    *,
    expect_arrays: bool,
    weighted_by_key: str,
    site_id_key: str,
    local_prefix: str | None,
) -> str | None:
    """Checks every reply passes, in order: error, local leak (wins over the rest), packing,
    the site's refusal, record structure, site id, example count."""
    if reason := check_error(message):
        return reason
    content = message.content
    if reason := check_local_leak(content, local_prefix):
        return reason
    if reason := check_packing(content):
        return reason
    if reason := check_declined(content):
        return reason
    if reason := check_structure(content, expect_arrays=expect_arrays):
        return reason
    metrics = metric_record(content)
    if reason := check_site_id(metrics, site_id_key):
        return reason
    return check_num_examples(metrics, weighted_by_key)


def validate_train_reply(
    message: Message,
    shared_names: Collection[str],
    reference: Mapping[str, ArraySpec],
    *,
    weighted_by_key: str = "num-examples",
    site_id_key: str = "site-id",
    local_prefix: str | None = LOCAL_PREFIX,
) -> str | None:
    """Return why a training reply must be rejected, or ``None`` if it is valid.

    Parameters
    ----------
    message : Message
        A reply to a training instruction.
    shared_names : Collection[str]
        The names that may leave a site; the reply must carry exactly these.
    reference : Mapping[str, ArraySpec]
        ``name -> (shape, dtype)`` of the current global arrays.
    weighted_by_key : str (default: "num-examples")
        Metric holding the number of training examples.
    site_id_key : str (default: "site-id")
        Metric holding the site's stable integer id.
    local_prefix : str or None (default: "personality.")
        Prefix of site-local names, reported with a specific reason; ``None``: no
        name is site-local (the ``fedavg_full`` baseline shares the whole model).

    Returns
    -------
    str | None
        The first failed check's reason, or ``None``.
    """
    if reason := _check_envelope(message, expect_arrays=True, weighted_by_key=weighted_by_key,
                                 site_id_key=site_id_key, local_prefix=local_prefix):
        return reason
    arrays = array_record(message.content)
    if reason := check_names(list(arrays.keys()), shared_names):
        return reason
    if reason := check_specs(arrays, reference):
        return reason
    return check_finite(arrays)


def validate_evaluate_reply(
    message: Message,
    shared_names: Collection[str],
    *,
    weighted_by_key: str = "num-examples",
    site_id_key: str = "site-id",
    local_prefix: str | None = LOCAL_PREFIX,
) -> str | None:
    """Return why an evaluation reply must be rejected, or ``None`` if it is valid.

    An evaluation reply needs no arrays; if it carries some, they must not include a
    site-local name or any name outside ``shared_names``.
    """
    if reason := _check_envelope(message, expect_arrays=False, weighted_by_key=weighted_by_key,
                                 site_id_key=site_id_key, local_prefix=local_prefix):
        return reason
    for record in message.content.array_records.values():
        unexpected = set(record.keys()) - set(shared_names)
        if unexpected:
            return (
                f"{len(unexpected)} name(s) outside the shared list: "
                f"{_names(unexpected)}"
            )
    return None
