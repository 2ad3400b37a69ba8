"""The ``local_only`` baseline as a strategy: instructions go out, nothing is aggregated.

Each site trains and keeps its whole model; the server only collects metrics, so the
run writes the same ``summary.json`` as a federated one (with zero array bytes).
"""
from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from strategies.metrics import per_site_metrics, weighted_average
from strategies.ordering import node_sites, reported_site_names
from strategies.round_log import RoundLog
from strategies.traffic import total_bytes


class LocalOnlyStrategy(Strategy):
    """Sample sites like FedAvg, never aggregate arrays, record metrics per round.

    Parameters
    ----------
    sampler : FedAvg
        Flower strategy used for node sampling and instruction building only.
    """

    def __init__(self, sampler: FedAvg) -> None:
        self.aggregator = sampler
        self.rounds: dict[int, RoundLog] = {}
        self.node_sites: dict[int, int] = {}  # node id -> site id seen in valid replies
        self.site_names: dict[str, str] = {}  # site id -> name a simulated site reported

    def round_log(self, server_round: int) -> RoundLog:
        """Return (creating if needed) the log of ``server_round``."""
        return self.rounds.setdefault(server_round, RoundLog(round=server_round))

    def summary(self) -> None:
        """Nothing to summarise: no aggregation."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Instructions without arrays."""
        messages = list(self.aggregator.configure_train(server_round, ArrayRecord(), config, grid))
        entry = self.round_log(server_round)
        entry.train_sent = len(messages)
        entry.bytes_down_train += total_bytes(messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Metrics only; the global (empty) record stays as it is."""
        valid = [r for r in replies if r.has_content() and "metrics" in r.content.metric_records]
        entry = self.round_log(server_round)
        entry.bytes_up_train += total_bytes(valid)
        entry.train_per_site = per_site_metrics(valid)
        self.node_sites.update(node_sites(valid))
        self.site_names.update(reported_site_names(valid))
        metrics = weighted_average(entry.train_per_site) if valid else None
        entry.train_metrics = dict(metrics) if metrics is not None else None
        return None, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Evaluation instructions without arrays."""
        messages = list(self.aggregator.configure_evaluate(server_round, ArrayRecord(), config, grid))
        entry = self.round_log(server_round)
        entry.evaluate_sent = len(messages)
        entry.bytes_down_evaluate += total_bytes(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Per-site and example-weighted evaluation metrics."""
        valid = [r for r in replies if r.has_content() and "metrics" in r.content.metric_records]
        entry = self.round_log(server_round)
        entry.bytes_up_evaluate += total_bytes(valid)
        entry.evaluate_per_site = per_site_metrics(valid)
        self.site_names.update(reported_site_names(valid))
        metrics = weighted_average(entry.evaluate_per_site) if valid else None
        entry.evaluate_metrics = dict(metrics) if metrics is not None else None
        return metrics
