"""What the strategy records per round for the server's ``summary.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """One rejected reply.

    Attributes
    ----------
    round : int
        Server round.
    stage : str
        ``"train"`` or ``"evaluate"``.
    site_id : int | None
        The site id the reply reported, if it reported a valid one.
    node_id : int
        Flower node id the reply stands for: its sender, or for the error reply the
        SuperLink sends on behalf of a dead node, that node (found through the
        instruction it replies to).
    reason : str
        Why it was rejected.
    budget_exhausted : bool
        The site declined because its privacy budget is spent (it will decline every
        later round too); the reply's ``budget-exhausted`` metric.
    """

    round: int
    stage: str
    site_id: int | None
    node_id: int
    reason: str
    budget_exhausted: bool = False


@dataclass
class RoundLog:
    """Traffic, metrics and rejections of one server round.

    Bytes are ``ArrayRecord.count_bytes()`` sums (serialized array payloads plus
    names; see :mod:`strategies.traffic`). ``bytes_down`` counts every instruction
    sent (training and evaluation), ``bytes_up`` every reply received, rejected
    ones included.
    """

    round: int
    bytes_down_train: int = 0
    bytes_down_evaluate: int = 0
    bytes_up_train: int = 0
    bytes_up_evaluate: int = 0
    train_sent: int = 0
    evaluate_sent: int = 0
    train_per_site: dict[int, dict[str, Any]] = field(default_factory=dict)
    evaluate_per_site: dict[int, dict[str, Any]] = field(default_factory=dict)
    train_metrics: dict[str, Any] | None = None
    evaluate_metrics: dict[str, Any] | None = None
    aggregated: bool = False
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def bytes_down(self) -> int:
        """Array bytes sent to clients this round (train + evaluate)."""
        return self.bytes_down_train + self.bytes_down_evaluate

    @property
    def bytes_up(self) -> int:
        """Array bytes received from clients this round (train + evaluate)."""
        return self.bytes_up_train + self.bytes_up_evaluate

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict in the shape of a ``summary.json`` round.

        Per-site keys are the site ids as strings; the server may rename them.
        """
        return {
            "round": self.round,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes": {
                "down_train": self.bytes_down_train,
                "down_evaluate": self.bytes_down_evaluate,
                "up_train": self.bytes_up_train,
                "up_evaluate": self.bytes_up_evaluate,
            },
            "aggregated": self.aggregated,
            "train": {
                **(self.train_metrics or {}),
                "per_site": {str(k): v for k, v in self.train_per_site.items()},
            },
            "eval": {
                **(self.evaluate_metrics or {}),
                "per_site": {str(k): v for k, v in self.evaluate_per_site.items()},
            },
            "rejected": [asdict(rejection) for rejection in self.rejections],
        }
