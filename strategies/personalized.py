"""The personalised strategy: shared names only, validated, ordered, counted.

:class:`PersonalizedStrategy` wraps any Flower message-based strategy (the
*aggregator*: FedAvg, FedAdam, FedMedian, ... or a DP wrapper around one) and adds:

- the global record must hold exactly the shared names (site-local ones never go out);
- every reply is validated (:mod:`strategies.validation`); rejected replies are logged
  with their reason, kept in :attr:`PersonalizedStrategy.rejections`, and never reach
  the aggregator;
- valid replies are sorted by site id and reduced to the shared ArrayRecord (in the
  global key order) plus ``num-examples``, so the aggregator's math is reproducible
  and Flower's reply-consistency check always holds;
- the round is skipped (aggregate ``None``, global unchanged) if fewer valid replies
  than the minimum remain;
- optionally (``robust=``, :class:`strategies.robust_replies.RobustFilter`), each site's
  update is norm-bounded and/or coordinate-wise trimmed before the aggregator sees it,
  and the round's report (norms, bound, flagged sites) is kept in its RoundLog;
- bytes down/up, per-site and example-weighted metrics are kept per round in
  :attr:`PersonalizedStrategy.rounds`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from mpdrm.contract.keys import budget_exhausted

from .metrics import per_site_metrics, weighted_average
from .ordering import (
    duplicate_site_ids,
    instruction_nodes,
    node_sites,
    reply_node_id,
    reported_site_names,
    site_id_of,
    site_label,
    sort_by_site_id,
)
from .robust import RobustConfig
from .robust_replies import RobustFilter
from .round_log import Rejection, RoundLog
from .traffic import total_bytes
from .validation import (
    LOCAL_PREFIX,
    ArraySpec,
    array_record,
    check_names,
    metric_record,
    validate_evaluate_reply,
    validate_train_reply,
)


# pylint: disable=too-many-instance-attributes
class PersonalizedStrategy(Strategy):
    """Aggregate only the shared names, after validating every reply.

    Parameters
    ----------
    aggregator : Strategy
        The Flower strategy that samples nodes, builds instructions and aggregates the
        validated ArrayRecords (e.g. ``FedAvg(...)``, ``FedAdam(...)``, or
        ``DifferentialPrivacyServerSideFixedClipping(FedAvg(...), ...)``).
    shared_names : Sequence[str]
        The names that may leave a site (``mpdrm.partition(model)[0]``).
    min_train_nodes : int (default: 2)
        Minimum number of valid training replies needed to aggregate a round.
    min_evaluate_nodes : int (default: 2)
        Minimum number of valid evaluation replies needed to aggregate metrics.
    weighted_by_key : str (default: "num-examples")
        Metric holding each site's number of examples (the averaging weight).
    site_id_key : str (default: "site-id")
        Metric holding each site's stable integer id.
    local_prefix : str or None (default: "personality.")
        Prefix of site-local names; none of ``shared_names`` may start with it, and a
        reply carrying such a name is rejected as a leak. ``None`` declares that no name
        is site-local: the ``fedavg_full`` baseline, which shares the whole model.
    robust : RobustConfig or None (default: None)
        Bounded influence of one site (``strategy.robust``): each valid reply's update
        (reply - global) is norm-bounded and/or coordinate-wise trimmed before the
        aggregator (and a central-DP wrapper) sees it; ``None``: replies go as they are.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        aggregator: Strategy,
        shared_names: Sequence[str],
        *,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        site_id_key: str = "site-id",
        local_prefix: str | None = LOCAL_PREFIX,
        robust: RobustConfig | None = None,
    ) -> None:
        names = list(shared_names)
        if not names:
            raise ValueError("shared_names is empty: nothing to aggregate")
        if len(set(names)) != len(names):
            raise ValueError("shared_names contains duplicates")
        local = [name for name in names if local_prefix is not None and name.startswith(local_prefix)]
        if local:
            raise ValueError(
                f"shared_names includes site-local names ({local[0]}, ...): "
                f"'{local_prefix}*' parameters must never leave a site"
            )
        self.aggregator = aggregator
        self.shared_names: tuple[str, ...] = tuple(names)
        self.min_train_nodes = min_train_nodes
        self.min_evaluate_nodes = min_evaluate_nodes
        self.weighted_by_key = weighted_by_key
        self.site_id_key = site_id_key
        self.local_prefix = local_prefix
        #: The bounded-influence step between validation and aggregation (or None).
        self.robust: RobustFilter | None = RobustFilter(robust) if robust is not None else None
        self.rounds: dict[int, RoundLog] = {}
        #: Node id -> site id of every valid reply so far (names dead/rejected sites).
        self.node_sites: dict[int, int] = {}
        #: Site id (str) -> the name a simulated site reported (deployed sites report none).
        self.site_names: dict[str, str] = {}
        self._sent: dict[str, list[Message]] = {}  # stage -> this round's instructions
        self._reference: dict[str, ArraySpec] = {}
        self._key_order: list[str] = []
        self._global = ArrayRecord()  # the global record of the current training round

    def __repr__(self) -> str:
        """Return a short description."""
        return (
            f"PersonalizedStrategy({self.aggregator!r}, "
            f"{len(self.shared_names)} shared names)"
        )

    @property
    def rejections(self) -> list[Rejection]:
        """All rejected replies so far, in round order."""
        return [r for number in sorted(self.rounds) for r in self.rounds[number].rejections]

    def round_log(self, server_round: int) -> RoundLog:
        """Return (creating if needed) the log of ``server_round``."""
        if server_round not in self.rounds:
            self.rounds[server_round] = RoundLog(round=server_round)
        return self.rounds[server_round]

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(INFO, "\t├──> Personalised: %d shared names", len(self.shared_names))
        log(
            INFO,
            "\t│\t└── Minimum valid replies: train (%d) | evaluate (%d)",
            self.min_train_nodes,
            self.min_evaluate_nodes,
        )
        if self.robust is not None:
            log(INFO, "\t│\t└── Bounded influence: %s", self.robust.describe())
        self.aggregator.summary()

    # ----------------------------------------------------------------- train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Check the global record, remember its specs, and count bytes sent."""
        self._check_global(arrays)
        self._reference = {
            name: (tuple(array.shape), array.dtype) for name, array in arrays.items()
        }
        self._key_order = list(arrays.keys())
        self._global = arrays
        messages = list(self.aggregator.configure_train(server_round, arrays, config, grid))
        self._sent["train"] = messages
        entry = self.round_log(server_round)
        entry.train_sent = len(messages)
        entry.bytes_down_train += total_bytes(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, sort and aggregate training replies.

        Returns ``(None, None)`` (global unchanged) when fewer than
        ``min_train_nodes`` valid replies remain.
        """
        if not self._reference:
            raise RuntimeError(
                "aggregate_train called before configure_train: the current global "
                "arrays (the reference for shape/dtype checks) are unknown"
            )
        replies = list(replies)
        entry = self.round_log(server_round)
        entry.bytes_up_train += total_bytes(replies)
        valid = self._keep_valid(
            server_round,
            "train",
            replies,
            lambda msg: validate_train_reply(
                msg,
                self.shared_names,
                self._reference,
                weighted_by_key=self.weighted_by_key,
                site_id_key=self.site_id_key,
                local_prefix=self.local_prefix,
            ),
        )
        entry.train_per_site = per_site_metrics(valid, self.site_id_key)
        if len(valid) < self.min_train_nodes:
            log(
                WARNING,
                "round %d train: %d valid replies of %d, fewer than the minimum %d: "
                "no aggregation, global arrays unchanged",
                server_round,
                len(valid),
                len(replies),
                self.min_train_nodes,
            )
            return None, None
        reduced = [self._reduced_reply(msg) for msg in valid]
        if self.robust is not None:
            reduced, entry.robust = self.robust.apply(
                server_round,
                reduced,
                [site_id_of(msg, self.site_id_key) for msg in valid],
                self._global,
            )
        arrays, _ = self.aggregator.aggregate_train(server_round, reduced)
        metrics = weighted_average(entry.train_per_site, self.weighted_by_key)
        entry.train_metrics = dict(metrics)
        if arrays is None:
            log(WARNING, "round %d train: the aggregator returned no arrays", server_round)
            return None, metrics
        entry.aggregated = True
        log(
            INFO,
            "round %d train: aggregated %d sites %s",
            server_round,
            len(valid),
            list(entry.train_per_site),
        )
        return self._restore_specs(arrays), metrics

    # -------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Check the global record and count bytes sent for evaluation."""
        self._check_global(arrays)
        messages = list(
            self.aggregator.configure_evaluate(server_round, arrays, config, grid)
        )
        self._sent["evaluate"] = messages
        entry = self.round_log(server_round)
        entry.evaluate_sent = len(messages)
        entry.bytes_down_evaluate += total_bytes(messages)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Validate evaluation replies; keep per-site and weighted metrics."""
        replies = list(replies)
        entry = self.round_log(server_round)
        entry.bytes_up_evaluate += total_bytes(replies)
        valid = self._keep_valid(
            server_round,
            "evaluate",
            replies,
            lambda msg: validate_evaluate_reply(
                msg,
                self.shared_names,
                weighted_by_key=self.weighted_by_key,
                site_id_key=self.site_id_key,
                local_prefix=self.local_prefix,
            ),
        )
        entry.evaluate_per_site = per_site_metrics(valid, self.site_id_key)
        if len(valid) < self.min_evaluate_nodes:
            log(
                WARNING,
                "round %d evaluate: %d valid replies of %d, fewer than the minimum %d: "
                "no aggregated metrics",
                server_round,
                len(valid),
                len(replies),
                self.min_evaluate_nodes,
            )
            return None
        metrics = weighted_average(entry.evaluate_per_site, self.weighted_by_key)
        entry.evaluate_metrics = dict(metrics)
        return metrics

    # --------------------------------------------------------------- helpers
    def _check_global(self, arrays: ArrayRecord) -> None:
        """Refuse a global record that is not exactly the shared names."""
        if reason := check_names(list(arrays.keys()), self.shared_names):
            raise ValueError(
                f"the global ArrayRecord must hold exactly the shared names: {reason}"
            )

    def _keep_valid(
        self,
        server_round: int,
        stage: str,
        replies: list[Message],
        validate: Callable[[Message], str | None],
    ) -> list[Message]:
        """Return the valid replies sorted by site id; log and record the others."""
        entry = self.round_log(server_round)
        sent = instruction_nodes(self._sent.get(stage, []))
        valid: list[Message] = []
        for reply in replies:
            reason = validate(reply)
            if reason is None:
                valid.append(reply)
            else:
                self._reject(entry, stage, reply, reason, sent)
        duplicates = duplicate_site_ids(valid, self.site_id_key)
        for reply in [r for r in valid if site_id_of(r, self.site_id_key) in duplicates]:
            site = site_id_of(reply, self.site_id_key)
            self._reject(entry, stage, reply, f"duplicate site id {site}", sent)
            valid.remove(reply)
        self.node_sites.update(node_sites(valid, self.site_id_key))
        self.site_names.update(reported_site_names(valid, self.site_id_key))
        return sort_by_site_id(valid, self.site_id_key)

    def _reject(
        self, entry: RoundLog, stage: str, reply: Message, reason: str, sent: dict[str, int]
    ) -> None:
        """Record and log one rejected reply (``sent``: instruction id -> node id)."""
        site_id: int | None = None
        exhausted = False
        if reply.has_content() and len(reply.content.metric_records) == 1:
            metrics = metric_record(reply.content)
            value = metrics.get(self.site_id_key)
            if isinstance(value, int) and not isinstance(value, bool):
                site_id = value
            exhausted = budget_exhausted(metrics)
        node_id = reply_node_id(reply, sent)
        entry.rejections.append(
            Rejection(entry.round, stage, site_id, node_id, reason, budget_exhausted=exhausted)
        )
        log(
            WARNING,
            "round %d %s: rejected reply of %s: %s",
            entry.round,
            stage,
            site_label(site_id, node_id, self.node_sites),
            reason,
        )

    def _reduced_reply(self, reply: Message) -> Message:
        """Return a copy holding only the shared arrays (global order) and weight."""
        arrays = array_record(reply.content)
        weight = metric_record(reply.content)[self.weighted_by_key]
        content = RecordDict(
            {
                "arrays": ArrayRecord({name: arrays[name] for name in self._key_order}),
                "metrics": MetricRecord({self.weighted_by_key: weight}),
            }
        )
        # Same metadata (node id, run id): no new instruction context is needed.
        return Message(content=content, metadata=reply.metadata)

    def _restore_specs(self, arrays: ArrayRecord) -> ArrayRecord:
        """Return the aggregate in the global key order and dtypes.

        Flower's FedAdam/FedYogi/FedAdagrad promote float32 to float64 (NumPy scalar
        promotion); casting back keeps the global record's dtypes, which the next
        round's replies are checked against.
        """
        restored = ArrayRecord()
        for name in self._key_order:
            array = arrays[name]
            _, dtype = self._reference[name]
            if array.dtype != dtype:
                array = Array(np.asarray(array.numpy(), dtype=np.dtype(dtype)))
            restored[name] = array
        return restored
