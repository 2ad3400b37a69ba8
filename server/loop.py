"""The server's round loop: Flower's ``Strategy.start`` loop, resumable and checkpointed.

``Strategy.start`` always begins at round 1 and offers no per-round hook besides a
central evaluation function; this loop runs rounds ``first..last`` with the same
strategy calls (``configure_train`` -> ``send_and_receive`` -> ``aggregate_train`` ->
``configure_evaluate`` -> ... -> ``aggregate_evaluate``) and calls ``on_round`` after
each completed round (checkpoint, summary, progress line).

Two optional hooks end a run that has too few sites (see :mod:`server.min_sites`):
``gate(round, stage)`` runs before each stage samples sites, ``after_train(round)``
after each aggregation; either may raise to end the run.

Round deadlines (:class:`Deadline`): Flower's ``send_and_receive`` waits for every reply
or ``round-timeout``, so one connected site that never answers holds every round for the
whole timeout. With a :class:`Deadline`, a stage pushes its instructions and pulls the
replies itself: once ``min-sites`` *valid* replies are in (checked as the strategy will
check them), it waits at most ``round-grace`` more seconds for the rest, then goes on;
a site that has not answered by then is logged and recorded as a rejection with reason
``late: ...`` (a reply arriving afterwards is never pulled: it is discarded). Fewer than
``min-sites`` valid replies by ``round-timeout`` end the run as before (``after_train``); the
sites still silent then are recorded as ``no reply within round-timeout=...`` rejections, so
the run's error names their nodes even in round 1, before any site is known by name.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from strategies.packing import pack_messages, unpack_messages
from strategies.personalized import PersonalizedStrategy
from strategies.round_log import Rejection
from strategies.validation import validate_evaluate_reply, validate_train_reply

RoundHook = Callable[[int, ArrayRecord], "bool | None"]
Gate = Callable[[int, str], None]
"""``gate(server_round, stage)`` before ``configure_<stage>``; raises to end the run."""
TrainCheck = Callable[[int], None]
"""``after_train(server_round)`` after ``aggregate_train``; raises to end the run."""
ReplyCheck = Callable[[Message], bool]
"""Whether a reply counts towards ``min-sites`` (it will pass the strategy's validation)."""

#: Seconds between two pulls of a stage's replies.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Deadline:
    """How long a stage waits for its replies.

    Attributes
    ----------
    min_sites : int
        Valid replies after which the grace period starts (the run config's ``min-sites``).
    grace : float
        Seconds to wait for the other replies once ``min_sites`` valid ones are in
        (``round-grace``).
    """

    min_sites: int
    grace: float


def reply_check(strategy: Strategy, stage: str, arrays: ArrayRecord) -> ReplyCheck:
    """The check a reply of ``stage`` must pass to count towards ``min-sites``.

    For a :class:`~strategies.PersonalizedStrategy` the strategy's own validation against
    the instruction's ``arrays`` (a reply that will be rejected does not count); for any
    other strategy a reply without error that carries metrics.
    """
    if not isinstance(strategy, PersonalizedStrategy):
        return lambda msg: not msg.has_error() and msg.has_content() and "metrics" in msg.content.metric_records
    options = {"weighted_by_key": strategy.weighted_by_key, "site_id_key": strategy.site_id_key,
               "local_prefix": strategy.local_prefix}
    if stage == "train":
        reference = {name: (tuple(array.shape), array.dtype) for name, array in arrays.items()}
        return lambda msg: validate_train_reply(msg, strategy.shared_names, reference, **options) is None
    return lambda msg: validate_evaluate_reply(msg, strategy.shared_names, **options) is None


# pylint: disable=too-many-arguments
def collect_replies(grid: Grid, messages: Iterable[Message], *, timeout: float, deadline: Deadline,
                    counts: ReplyCheck, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep,
                    interval: float = POLL_SECONDS) -> tuple[list[Message], list[Message], bool]:
    """Push ``messages`` and pull their replies until every one is in, or ``deadline.grace``
    seconds after ``deadline.min_sites`` replies passed ``counts``, or ``timeout`` seconds.

    Returns
    -------
    tuple[list[Message], list[Message], bool]
        The replies, the instructions left unanswered, and whether ``min_sites`` of the
        replies passed ``counts``.
    """
    messages = list(messages)
    ids = [str(i) for i in grid.push_messages(messages) if i]  # push sets each message's id
    sent = {str(m.metadata.message_id): m for m in messages}
    pending, replies, valid = set(ids), [], 0
    start = clock()
    cutoff = start + timeout
    while pending:
        for reply in unpack_messages(grid.pull_messages(sorted(pending))):
            if reply.metadata.reply_to_message_id in pending:
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
                valid += bool(counts(reply))
        now = clock()
        if valid >= deadline.min_sites and cutoff > now + deadline.grace and pending:
            cutoff = now + deadline.grace  # enough valid replies: the others get the grace only
        if not pending or now >= cutoff:
            break
        sleep(max(0.0, min(interval, cutoff - now)))
    return replies, [sent[i] for i in ids if i in pending and i in sent], valid >= deadline.min_sites


def record_unanswered(strategy: Strategy, server_round: int, stage: str, unanswered: list[Message],
                      reason: str) -> None:
    """Log every site that left its instruction unanswered and record it as a rejection with ``reason``."""
    entry = strategy.round_log(server_round) if hasattr(strategy, "round_log") else None
    known = dict(getattr(strategy, "node_sites", {}))
    for message in unanswered:
        node_id = int(message.metadata.dst_node_id)
        log(WARNING, "round %d %s: node %d (site %s): %s", server_round, stage, node_id,
            known.get(node_id, "unknown"), reason)
        if entry is not None:
            entry.rejections.append(Rejection(server_round, stage, known.get(node_id), node_id, reason))


def unanswered_reason(deadline: Deadline, timeout: float, enough: bool) -> str:
    """Why an instruction counts as unanswered: the grace after ``min-sites`` valid replies
    (``late: ...``), or the whole ``round-timeout`` without enough of them."""
    if enough:
        return (f"late: no reply within round-grace={deadline.grace:g} s after min-sites="
                f"{deadline.min_sites} valid replies (a later reply is discarded)")
    return f"no reply within round-timeout={timeout:g} s"


def exchange(strategy: Strategy, grid: Grid, server_round: int, stage: str, messages: Iterable[Message],
             arrays: ArrayRecord, timeout: float, deadline: Deadline | None) -> list[Message]:
    """Send one stage's instructions and return the replies (see :class:`Deadline`).

    Instructions travel packed (one array a message, :mod:`strategies.packing`); replies
    are unpacked before anything reads them."""
    messages = pack_messages(messages)
    if deadline is None:
        return unpack_messages(grid.send_and_receive(messages, timeout=timeout))
    replies, unanswered, enough = collect_replies(grid, messages, timeout=timeout, deadline=deadline,
                                                  counts=reply_check(strategy, stage, arrays))
    if unanswered:  # with too few, after_train ends the run and names these nodes from the record
        record_unanswered(strategy, server_round, stage, unanswered, unanswered_reason(deadline, timeout, enough))
    return replies


def evaluate_round(strategy: Strategy, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                   timeout: float, gate: Gate | None = None, deadline: Deadline | None = None) -> MetricRecord | None:
    """One federated evaluation of ``arrays`` (round 0: the untrained model)."""
    if gate is not None:
        gate(server_round, "evaluate")
    messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), grid)
    replies = exchange(strategy, grid, server_round, "evaluate", messages, arrays, timeout, deadline)
    return strategy.aggregate_evaluate(server_round, replies)


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first: int,
    last: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    timeout: float,
    on_round: RoundHook,
    gate: Gate | None = None,
    after_train: TrainCheck | None = None,
    deadline: Deadline | None = None,
) -> ArrayRecord:
    """Run rounds ``first..last``; returns the final global arrays.

    A round whose aggregation fails (too few valid replies) keeps the global arrays;
    ``on_round`` returning True ends the run after that round. ``gate`` and
    ``after_train`` (optional) may raise to end the run (too few sites). ``deadline``
    (optional) ends a stage ``round-grace`` seconds after ``min-sites`` valid replies;
    without it a stage waits for every reply or ``timeout``.
    """
    for server_round in range(first, last + 1):
        if gate is not None:
            gate(server_round, "train")
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(train_config)), grid)
        replies = exchange(strategy, grid, server_round, "train", messages, arrays, timeout, deadline)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if after_train is not None:
            after_train(server_round)
        if aggregated is not None:
            arrays = aggregated
        evaluate_round(strategy, grid, server_round, arrays, evaluate_config, timeout, gate, deadline)
        if on_round(server_round, arrays):  # True: the run must end (e.g. no site has budget left)
            break
    return arrays
