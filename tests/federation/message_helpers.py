"""Build real Flower messages outside a running ServerApp/ClientApp task.

Flower stamps every new instruction with the run id of the current task
(``flwr.supercore.task_identity.TaskIdentity``), which only a running SuperLink or
SuperNode sets. :func:`ensure_task_identity` is the one place that sets it for tests.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from client.packing import packing_mod

TEST_RUN_ID = 4242
SERVER_NODE_ID = 1


def ensure_task_identity() -> None:
    """Set the run/node/task id Flower reads when a Message is created (tests only)."""
    TaskIdentity.run_id = TEST_RUN_ID
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 1


def instruction(node_id: int, message_type: str = MessageType.TRAIN) -> Message:
    """Return an (empty) instruction addressed to ``node_id``."""
    ensure_task_identity()
    return Message(RecordDict(), dst_node_id=node_id, message_type=message_type)


def arrayrecord(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Return an ArrayRecord of NumPy arrays, keeping the mapping's order."""
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})


# pylint: disable=too-many-arguments
def reply(
    node_id: int,
    arrays: Mapping[str, np.ndarray] | None,
    metrics: Mapping[str, int | float] | None,
    *,
    message_type: str = MessageType.TRAIN,
    extra: Mapping[str, ArrayRecord | MetricRecord | ConfigRecord] | None = None,
) -> Message:
    """Return a reply from ``node_id`` as a ClientApp would send it.

    ``arrays`` goes to ArrayRecord "arrays" and ``metrics`` to MetricRecord "metrics"
    (each left out when ``None``); ``extra`` adds further records.
    """
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrayrecord(arrays)
    if metrics is not None:
        content["metrics"] = MetricRecord(dict(metrics))
    for key, record in (extra or {}).items():
        content[key] = record
    return Message(content, reply_to=instruction(node_id, message_type))


def error_reply(node_id: int, reason: str, code: int = 0) -> Message:
    """Return an error reply from ``node_id``."""
    return Message(Error(code=code, reason=reason), reply_to=instruction(node_id))


Handler = Callable[[Message], Message]


def over_the_wire(handler: Handler, message: Message) -> Message:
    """``handler``'s answer to ``message`` as a site's ClientApp gives it (its packing mod:
    a packed instruction is unpacked for the handler and the reply packed; one a test built
    and sent straight to the grid is answered as it is)."""
    return packing_mod(message, None, lambda instruction, _context: handler(instruction))  # type: ignore[arg-type]


class LocalGrid(Grid):
    """In-process Grid: each node is a Python handler that answers a Message.

    Replies come back in a shuffled order (seeded) to mimic arrival order. Creating
    one stands for a running ServerApp task, so it sets the task identity.

    ``delays`` (node id -> seconds) holds a node's replies back that long after the push
    (``math.inf``: a connected site that never answers); such a node's handler is not
    called until its reply is due.
    """

    def __init__(self, handlers: Mapping[int, Handler | None], seed: int = 0,
                 delays: Mapping[int, float] | None = None) -> None:
        ensure_task_identity()
        self.handlers = dict(handlers)
        self.delays = dict(delays or {})
        self.rng = random.Random(seed)
        self.sent: list[Message] = []
        self.received: list[Message] = []
        self._queued: dict[str, tuple[float, Message]] = {}  # message id -> (due time, instruction)

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        """Not used in process."""
        raise NotImplementedError

    def run(self):  # type: ignore[no-untyped-def]
        """Not used in process."""
        raise NotImplementedError

    def create_message(  # type: ignore[override]  # pylint: disable=R0913,R0917
        self, content, message_type, dst_node_id, group_id, ttl=None
    ) -> Message:
        """Deprecated in Flower; not used."""
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        """Return the node ids of the handlers."""
        return list(self.handlers)

    def _answer(self, message: Message) -> Message:
        """The node's reply, marked as the reply to ``message`` (as the SuperLink does)."""
        answer = over_the_wire(self.handlers[message.metadata.dst_node_id], message)
        if not answer.metadata.reply_to_message_id:
            answer.metadata.__dict__["_reply_to_message_id"] = message.metadata.message_id
        return answer

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Give each message an id and queue it; a node without delay answers at once."""
        ids: list[str] = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(message)
            delay = self.delays.get(message.metadata.dst_node_id, 0.0)
            self._queued[message.metadata.message_id] = (time.monotonic() + delay, message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies due by now to the given instructions (each once), shuffled."""
        now, replies = time.monotonic(), []
        for message_id in message_ids:
            due, message = self._queued.get(message_id, (None, None))
            if message is not None and due <= now:
                del self._queued[message_id]
                replies.append(self._answer(message))
        self.rng.shuffle(replies)
        self.received.extend(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message to its node's handler and return the replies."""
        messages = list(messages)
        self.sent.extend(messages)
        replies = [self._answer(m) for m in messages]
        self.rng.shuffle(replies)
        self.received.extend(replies)
        return replies
