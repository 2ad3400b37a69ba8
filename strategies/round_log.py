"""What the strategy records per round for the server's ``summary.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rejection:
        """The rejection of ``dataclasses.asdict(rejection)`` (a checkpoint or ``summary.json``)."""
        site_id = data.get("site_id")
        return cls(round=int(data["round"]), stage=str(data["stage"]),
                   site_id=None if site_id is None else int(site_id), node_id=int(data["node_id"]),
                   reason=str(data["reason"]), budget_exhausted=bool(data.get("budget_exhausted", False)))


@dataclass
class RoundLog:
    """Traffic, metrics and rejections of one server round.

    Bytes are ``ArrayRecord.count_bytes()`` sums (serialized array payloads plus
    names; see :mod:`strategies.traffic`). ``bytes_down`` counts every instruction
    sent (training and evaluation), ``bytes_up`` every reply received, rejected
    ones included.

    ``robust`` is the bounded-influence report of the round's training aggregation
    (:meth:`strategies.robust_replies.RobustFilter.apply`: every site's update norm, the
    bound, the flagged sites), ``None`` when ``strategy.robust`` is off or nothing was
    aggregated.
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
    robust: dict[str, Any] | None = None

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
            **({"robust": _robust_dict(self.robust)} if self.robust is not None else {}),
        }

    def to_state(self) -> dict[str, Any]:
        """Every field as plain data (for a checkpoint); :meth:`from_state` reverses it.

        Unlike :meth:`to_dict` (the ``summary.json`` shape) it keeps the per-site keys as
        integers and the bytes per stage, so the log is rebuilt exactly.
        """
        return asdict(self)

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> RoundLog:
        """The log of :meth:`to_state`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RoundLog field(s) {unknown}")
        values = {k: v for k, v in data.items() if k != "rejections"}
        for key in ("train_per_site", "evaluate_per_site"):
            values[key] = {int(site): dict(metrics) for site, metrics in dict(data.get(key) or {}).items()}
        if data.get("robust") is not None:
            robust = dict(data["robust"])
            robust["per_site"] = {int(s): dict(v) for s, v in dict(robust.get("per_site") or {}).items()}
            robust["flagged"] = [int(s) for s in robust.get("flagged", [])]
            values["robust"] = robust
        return cls(**values, rejections=[Rejection.from_dict(r) for r in data.get("rejections", [])])


def _robust_dict(robust: Mapping[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` shape of a bounded-influence report: site ids as strings
    (``per_site`` keys and ``flagged``), as in the train and eval blocks."""
    out = dict(robust)
    out["per_site"] = {str(k): dict(v) for k, v in dict(robust.get("per_site") or {}).items()}
    out["flagged"] = [str(s) for s in robust.get("flagged", [])]
    return out
