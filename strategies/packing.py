"""One Flower array per message: the ArrayRecords of a message packed for transport.

Flower moves a message as a tree of objects, one per array (and per 5 MB chunk), and every
object is a request of its own at every hop (ServerApp -> SuperLink -> SuperNode ->
ClientApp and back) and a row in the SuperLink's database. MPDRM's shared part is about a
hundred arrays, so a message was some 110 objects, and moving them cost more than the
training of a small round. :func:`pack_content` turns each non-empty ArrayRecord of a
message into one ArrayRecord holding a single ``uint8`` array: the arrays' serialized
payloads (``Array.data``) back to back, in their order, with a ConfigRecord beside it that
lists each array's name, dtype, storage type, shape and payload length.
:func:`unpack_content` rebuilds the original arrays from it, bit for bit, and refuses a
packed record whose layout does not match its bytes.

The names stay in the message (in the layout), so a recording relay still sees which
tensors a site sends. ``server.loop`` packs instructions and unpacks replies; the
ClientApp's ``client.packing.packing_mod`` unpacks instructions and packs the replies to
packed ones, so everything else (strategies, handlers, audit, byte accounting) sees the
arrays by name.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

#: Prefix of the ConfigRecord that describes the packed ArrayRecord of the same name.
LAYOUT_PREFIX = "packed-layout:"
#: The one array of a packed ArrayRecord.
PACKED_ARRAY = "packed"


def layout_key(record_name: str) -> str:
    """Name of the layout ConfigRecord of the packed ArrayRecord ``record_name``."""
    return f"{LAYOUT_PREFIX}{record_name}"


def pack_record(record: ArrayRecord) -> tuple[ArrayRecord, ConfigRecord]:
    """The arrays of ``record`` as one ``uint8`` array and the layout to unpack it."""
    arrays = list(record.items())
    payloads = [array.data for _, array in arrays]
    blob = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    layout = ConfigRecord({
        "names": [name for name, _ in arrays],
        "dtypes": [array.dtype for _, array in arrays],
        "stypes": [array.stype for _, array in arrays],
        "ndims": [len(array.shape) for _, array in arrays],
        "dims": [int(d) for _, array in arrays for d in array.shape],
        "sizes": [len(payload) for payload in payloads],
    })
    return ArrayRecord({PACKED_ARRAY: Array(blob)}), layout


def _layout_lists(layout: ConfigRecord, where: str) -> tuple[list, ...]:
    fields = ("names", "dtypes", "stypes", "ndims", "dims", "sizes")
    missing = [f for f in fields if f not in layout]
    if missing:
        raise ValueError(f"{where}: layout lacks {missing}")
    names, dtypes, stypes, ndims, dims, sizes = (list(layout[f]) for f in fields)
    count = len(names)
    if not len(dtypes) == len(stypes) == len(ndims) == len(sizes) == count:
        raise ValueError(f"{where}: layout lists differ in length")
    if len(set(names)) != count:
        raise ValueError(f"{where}: layout names an array twice")
    if any(n < 0 for n in ndims) or sum(ndims) != len(dims) or any(s < 0 for s in sizes):
        raise ValueError(f"{where}: layout shapes or sizes are inconsistent")
    return names, dtypes, stypes, ndims, dims, sizes


def unpack_record(packed: ArrayRecord, layout: ConfigRecord, where: str = "packed record") -> ArrayRecord:
    """The ArrayRecord that :func:`pack_record` packed, bit for bit.

    Raises
    ------
    ValueError
        The record is not one packed array, or its layout does not match its bytes
        (truncated or tampered); ``where`` names the record in the message.
    """
    if list(packed.keys()) != [PACKED_ARRAY]:
        raise ValueError(f"{where}: expected the single array {PACKED_ARRAY!r}, got {list(packed.keys())[:5]}")
    names, dtypes, stypes, ndims, dims, sizes = _layout_lists(layout, where)
    blob = packed[PACKED_ARRAY].numpy()
    if blob.dtype != np.uint8 or blob.ndim != 1 or blob.size != sum(sizes):
        raise ValueError(f"{where}: the layout describes {sum(sizes)} bytes, the packed array holds "
                         f"{blob.size} ({blob.dtype})")
    data = blob.tobytes()
    out, offset, dim_at = ArrayRecord(), 0, 0
    for name, dtype, stype, ndim, size in zip(names, dtypes, stypes, ndims, sizes):
        shape = tuple(int(d) for d in dims[dim_at:dim_at + ndim])
        out[name] = Array(dtype=dtype, shape=shape, stype=stype, data=data[offset:offset + size])
        offset, dim_at = offset + size, dim_at + ndim
    return out


def pack_content(content: RecordDict) -> RecordDict:
    """``content`` with each non-empty ArrayRecord packed (others and packed ones unchanged)."""
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord) and len(record) and layout_key(key) not in content:
            out[key], out[layout_key(key)] = pack_record(record)
        else:
            out[key] = record
    return out


def unpack_content(content: RecordDict) -> RecordDict:
    """``content`` with every packed ArrayRecord unpacked and its layout removed.

    Raises
    ------
    ValueError
        A layout without its ArrayRecord, or a packed record that does not match its layout.
    """
    layouts = {key[len(LAYOUT_PREFIX):]: record for key, record in content.items()
               if key.startswith(LAYOUT_PREFIX) and isinstance(record, ConfigRecord)}
    out = RecordDict()
    for key, record in content.items():
        if key.startswith(LAYOUT_PREFIX) and key[len(LAYOUT_PREFIX):] in layouts:
            continue
        if key in layouts:
            if not isinstance(record, ArrayRecord):
                raise ValueError(f"record {key!r}: a layout names it but it is not an ArrayRecord")
            out[key] = unpack_record(record, layouts[key], f"record {key!r}")
        else:
            out[key] = record
    orphans = sorted(set(layouts) - set(content.keys()))
    if orphans:
        raise ValueError(f"packed layouts without their ArrayRecords: {orphans}")
    return out


def pack_messages(messages: Iterable[Message]) -> list[Message]:
    """The same messages, each one's content packed in place (an error reply is left as it is)."""
    out = list(messages)
    for message in out:
        if message.has_content():
            message.content = pack_content(message.content)
    return out


def unpack_messages(messages: Iterable[Message]) -> list[Message]:
    """The same messages, each packed content unpacked in place. A content that does not
    unpack is left as it came, for reply validation to reject with the reason
    (:func:`strategies.validation.check_packing`)."""
    out = list(messages)
    for message in out:
        if message.has_content() and is_packed(message.content):
            try:
                message.content = unpack_content(message.content)
            except ValueError:
                pass
    return out


def is_packed(content: RecordDict) -> bool:
    """True when ``content`` holds at least one packed ArrayRecord."""
    return any(key.startswith(LAYOUT_PREFIX) for key in content.keys())
