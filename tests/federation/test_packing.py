"""Messages travel packed (``strategies.packing``, ``client.packing``): one array a record,
unpacked bit for bit, a truncated or tampered pack refused with its reason."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from client.packing import packing_mod
import mpdrm
from mpdrm.contract.sharing import outbound_state
from mpdrm.model.mpdrm import build_model
from strategies.packing import (LAYOUT_PREFIX, PACKED_ARRAY, is_packed, layout_key, pack_content, pack_messages,
                                pack_record, unpack_content, unpack_messages, unpack_record)
from strategies.validation import validate_train_reply
from tests.federation.message_helpers import instruction, reply


def mixed_record() -> ArrayRecord:
    """Arrays of several dtypes and ranks, a 0-d one and an empty one, in a fixed order."""
    rng = np.random.default_rng(0)
    return ArrayRecord({
        "b.weight": Array(rng.standard_normal((3, 4, 2)).astype(np.float32)),
        "a.bias": Array(rng.standard_normal(5).astype(np.float64)),
        "steps": Array(np.array(7, dtype=np.int64)),
        "mask": Array(np.array([True, False, True])),
        "empty": Array(np.zeros((0, 3), dtype=np.float32)),
        "half": Array(rng.standard_normal((2, 2)).astype(np.float16)),
    })


def test_a_record_unpacks_bit_for_bit_in_its_order() -> None:
    record = mixed_record()
    packed, layout = pack_record(record)
    assert list(packed.keys()) == [PACKED_ARRAY] and packed[PACKED_ARRAY].dtype == "uint8"
    back = unpack_record(packed, layout)
    assert list(back.keys()) == list(record.keys())
    for name, array in record.items():
        assert back[name].object_id == array.object_id  # dtype, shape, storage type and bytes
        np.testing.assert_array_equal(back[name].numpy(), array.numpy())
        assert back[name].numpy().dtype == array.numpy().dtype


def test_the_model_s_shared_part_becomes_a_handful_of_objects() -> None:
    model = build_model("tiny")
    state = outbound_state(model, list(mpdrm.partition(model)[0]))
    record = ArrayRecord(state)
    packed = pack_content(RecordDict({"arrays": record}))
    per_name, one = len(get_all_nested_objects(record)), len(get_all_nested_objects(packed))
    assert len(record) > 50 and per_name > 50 and one <= 6, (len(record), per_name, one)
    assert unpack_content(packed)["arrays"].object_id == record.object_id


def test_content_keeps_other_records_and_names_in_the_layout() -> None:
    content = RecordDict({"arrays": mixed_record(), "metrics": MetricRecord({"num-examples": 3}),
                          "config": ConfigRecord({"x": 1}), "none": ArrayRecord()})
    packed = pack_content(content)
    assert is_packed(packed) and not is_packed(content)
    assert list(packed["arrays"].keys()) == [PACKED_ARRAY]
    assert list(packed[layout_key("arrays")]["names"]) == list(content["arrays"].keys())
    assert len(packed["none"]) == 0 and layout_key("none") not in packed  # nothing to pack
    assert packed["metrics"] is content["metrics"] and packed["config"] is content["config"]
    assert pack_content(packed)["arrays"] is packed["arrays"]  # packing twice changes nothing
    back = unpack_content(packed)
    assert sorted(back.keys()) == sorted(content.keys())
    assert back["arrays"].object_id == content["arrays"].object_id


def _tampered(change: str) -> RecordDict:
    packed = pack_content(RecordDict({"arrays": mixed_record()}))
    layout = packed[layout_key("arrays")]
    if change == "truncated":
        data = packed["arrays"][PACKED_ARRAY].numpy()[:-5]
        packed["arrays"] = ArrayRecord({PACKED_ARRAY: Array(data)})
    elif change == "sizes":
        layout["sizes"] = [*list(layout["sizes"])[:-1], int(layout["sizes"][-1]) + 1]
    elif change == "duplicate":
        layout["names"] = ["same"] * len(layout["names"])
    elif change == "dims":
        layout["dims"] = list(layout["dims"])[:-1]
    elif change == "orphan":
        del packed["arrays"]
    elif change == "extra-array":
        packed["arrays"]["x"] = Array(np.zeros(1, dtype=np.float32))
    return packed


@pytest.mark.parametrize("change, says", [
    ("truncated", "the layout describes"), ("sizes", "the layout describes"), ("duplicate", "twice"),
    ("dims", "inconsistent"), ("orphan", "without their ArrayRecords"), ("extra-array", "single array"),
])
def test_a_truncated_or_tampered_pack_is_refused(change: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        unpack_content(_tampered(change))


def test_the_server_rejects_a_reply_whose_pack_is_truncated_and_keeps_the_others() -> None:
    names = ["a.w"]
    good = reply(1, {"a.w": np.ones(3, np.float32)}, {"num-examples": 4, "site-id": 1})
    bad = reply(2, {"a.w": np.ones(3, np.float32)}, {"num-examples": 4, "site-id": 2})
    pack_messages([good, bad])
    content = bad.content
    content["arrays"] = ArrayRecord({PACKED_ARRAY: Array(content["arrays"][PACKED_ARRAY].numpy()[:-1])})
    unpack_messages([good, bad])
    reference = {"a.w": ((3,), "float32")}
    assert validate_train_reply(good, names, reference) is None
    reason = validate_train_reply(bad, names, reference)
    assert reason and "do not match their layout" in reason and "describes" in reason


def test_a_leaked_name_in_a_pack_is_reported_as_a_leak() -> None:
    leaky = reply(1, {"a.w": np.ones(3, np.float32), "personality.w": np.ones(2, np.float32)},
                  {"num-examples": 4, "site-id": 1})
    pack_messages([leaky])
    leaky.content["arrays"] = ArrayRecord({PACKED_ARRAY: Array(np.zeros(1, np.uint8))})  # and broken
    reason = validate_train_reply(leaky, ["a.w"], {"a.w": ((3,), "float32")})
    assert reason and "personality.w" in reason and "never leave a site" in reason


def test_the_client_mod_unpacks_the_instruction_and_packs_the_reply() -> None:
    message = instruction(7)
    message.content = RecordDict({"arrays": mixed_record(), "config": ConfigRecord({"server-round": 1})})
    sent = message.content["arrays"].object_id
    pack_messages([message])
    seen: list[RecordDict] = []

    def handler(received: Message, _context: object) -> Message:
        seen.append(received.content)
        return Message(RecordDict({"arrays": received.content["arrays"],
                                   "metrics": MetricRecord({"num-examples": 1})}), reply_to=received)

    answer = packing_mod(message, None, handler)  # type: ignore[arg-type]
    assert not is_packed(seen[0]) and seen[0]["arrays"].object_id == sent
    assert is_packed(answer.content) and any(k.startswith(LAYOUT_PREFIX) for k in answer.content.keys())
    assert unpack_content(answer.content)["arrays"].object_id == sent


def test_an_unpacked_instruction_gets_an_unpacked_reply() -> None:
    message = instruction(7)
    message.content = RecordDict({"arrays": mixed_record()})

    def handler(received: Message, _context: object) -> Message:
        return Message(RecordDict({"arrays": received.content["arrays"]}), reply_to=received)

    answer = packing_mod(message, None, handler)  # type: ignore[arg-type]
    assert not is_packed(answer.content) and list(answer.content["arrays"].keys()) == list(mixed_record().keys())
