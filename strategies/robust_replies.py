"""Bounded influence of one site, applied to validated training replies.

:class:`RobustFilter` sits in :class:`strategies.PersonalizedStrategy` between the
validation and the aggregator (and, under central DP, before Flower's clipping and noise
wrapper). It receives the validated replies, sorted by site id and reduced to the shared
arrays, and the global record they answer, and returns replies the aggregator can take
unchanged:

1. each site's update ``reply - global`` gets its L2 norm;
2. with a bound (``median`` or ``fixed``), an update longer than the bound is scaled down
   to it: the site's reply becomes ``global + scale x update``; a site within the bound
   keeps its reply bit for bit;
3. with ``trim > 0``, the coordinate-wise trimmed mean of the (bounded) updates replaces
   every site's update, so that any aggregator (FedAvg, FedAdam, FedMedian, ...) sees one
   agreed update and its own rule (server optimizer, momentum) acts on it.

The math is :mod:`strategies.robust`. What happened is returned as plain data for the
round's :class:`strategies.RoundLog` (``robust``): every site's norm, whether it was
bounded (and by which scale), its trimmed fraction, and the list of flagged sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore import log

from .robust import (
    RobustConfig,
    clip_scale,
    is_float,
    norm_bound,
    trim_count,
    trimmed_counts,
    trimmed_flag_threshold,
    trimmed_mean,
    update_norm,
    update_of,
)
from .validation import array_record


class RobustFilter:
    """Bound each site's update (and optionally trim coordinates) before aggregation.

    Parameters
    ----------
    config : RobustConfig
        The mode (``median`` / ``fixed`` / none), bound and trim fraction.
    """

    def __init__(self, config: RobustConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"RobustFilter({self.config!r})"

    def describe(self) -> str:
        """One line for the strategy's summary log."""
        c = self.config
        if c.mode == "median":
            bound = f"update norm <= {c.factor:g} x the round's median"
        elif c.mode == "fixed":
            bound = f"update norm <= {c.bound:g}"
        else:
            bound = "no norm bound"
        trim = f", coordinate-wise trimmed mean ({c.trim:g} per side)" if c.trim > 0 else ""
        return bound + trim

    def apply(
        self,
        server_round: int,
        replies: Sequence[Message],
        site_ids: Sequence[int],
        global_arrays: ArrayRecord,
    ) -> tuple[list[Message], dict[str, Any]]:
        """Return the replies to aggregate and the round's report.

        Parameters
        ----------
        server_round : int
            The round (for log lines).
        replies : Sequence[Message]
            Validated replies, each holding one ArrayRecord with exactly the names of
            ``global_arrays`` and one MetricRecord (the aggregator's weight).
        site_ids : Sequence[int]
            The site id of each reply, same order.
        global_arrays : ArrayRecord
            The global record the round's instructions carried.

        Returns
        -------
        (list[Message], dict)
            The replies in the same order (bounded or trimmed where needed, metadata
            kept) and the report: ``mode``, ``bound`` (the norm bound, ``None`` without
            one), ``median_norm``, ``factor`` (``median`` mode), ``trim``,
            ``trimmed_per_side``, ``per_site`` (site id -> ``norm``, ``bounded``,
            ``scale``, and with trimming ``trimmed_fraction``, ``trimmed``) and
            ``flagged`` (site ids bounded or trimmed, ascending).
        """
        if len(replies) != len(site_ids):
            raise ValueError("one site id per reply is needed")
        c = self.config
        reference = {name: array.numpy() for name, array in global_arrays.items()}
        records = [array_record(reply.content) for reply in replies]
        updates = [update_of({n: a.numpy() for n, a in record.items()}, reference) for record in records]
        norms = [update_norm(update) for update in updates]
        report: dict[str, Any] = {"mode": c.mode, "trim": c.trim, "bound": None,
                                  "median_norm": float(np.median(norms)) if norms else None}
        scales = [1.0] * len(replies)
        if c.mode:
            bound = norm_bound(norms, c.mode, c.bound)
            scales = [clip_scale(norm, bound) for norm in norms]
            report["bound"] = bound
            if c.mode == "median":
                report["factor"] = c.factor
        per_site: dict[int, dict[str, Any]] = {
            int(site): {"norm": norm, "bounded": scale < 1.0, "scale": scale}
            for site, norm, scale in zip(site_ids, norms, scales, strict=True)
        }
        if c.trim > 0:
            out_records = self._trimmed(records, updates, scales, reference, site_ids, per_site)
            report["trimmed_per_side"] = trim_count(len(replies), c.trim)
        else:
            out_records = [
                record if scale == 1.0 else _bounded(record, update, scale, reference)
                for record, update, scale in zip(records, updates, scales, strict=True)
            ]
        report["per_site"] = per_site
        report["flagged"] = sorted(
            site for site, info in per_site.items() if info["bounded"] or info.get("trimmed", False)
        )
        self._log(server_round, report)
        out = [_with_arrays(reply, record) for reply, record in zip(replies, out_records, strict=True)]
        return out, report

    def _trimmed(
        self,
        records: list[ArrayRecord],
        updates: list[dict[str, np.ndarray]],
        scales: list[float],
        reference: dict[str, np.ndarray],
        site_ids: Sequence[int],
        per_site: dict[int, dict[str, Any]],
    ) -> list[ArrayRecord]:
        """Every reply's floating arrays set to global + the trimmed mean of the bounded updates."""
        trim = self.config.trim
        counts = np.zeros(len(records), dtype=np.int64)
        total = 0
        agreed: dict[str, np.ndarray] = {}
        for name, ref in reference.items():
            if not is_float(ref):
                continue
            stacked = np.stack([update[name] * scale for update, scale in zip(updates, scales, strict=True)])
            agreed[name] = (ref.astype(np.float64) + trimmed_mean(stacked, trim)).astype(ref.dtype)
            counts += trimmed_counts(stacked, trim)
            total += int(ref.size)
        threshold = trimmed_flag_threshold(len(records), trim)
        for site, count in zip(site_ids, counts, strict=True):
            fraction = float(count) / total if total else 0.0
            per_site[int(site)].update({"trimmed_fraction": fraction, "trimmed": fraction > threshold})
        out = []
        for record in records:
            out.append(ArrayRecord({
                name: Array(agreed[name]) if name in agreed else array for name, array in record.items()
            }))
        return out

    @staticmethod
    def _log(server_round: int, report: dict[str, Any]) -> None:
        """One WARNING line per flagged site, one INFO line for the round."""
        for site in report["flagged"]:
            info = report["per_site"][site]
            parts = [f"update norm {info['norm']:.4g}"]
            if info["bounded"]:
                parts.append(f"bounded to {report['bound']:.4g} (scale {info['scale']:.3g})")
            if info.get("trimmed"):
                parts.append(f"trimmed at {info['trimmed_fraction']:.0%} of coordinates")
            log(WARNING, "round %d robust: site %d %s", server_round, site, ", ".join(parts))
        log(
            INFO,
            "round %d robust: median update norm %.4g, bound %s, %d site(s) flagged",
            server_round,
            report["median_norm"] if report["median_norm"] is not None else float("nan"),
            "none" if report["bound"] is None else f"{report['bound']:.4g}",
            len(report["flagged"]),
        )


def _bounded(record: ArrayRecord, update: dict[str, np.ndarray], scale: float,
             reference: dict[str, np.ndarray]) -> ArrayRecord:
    """``global + scale x update`` for the floating arrays (cast to their dtype), others kept."""
    return ArrayRecord({
        name: Array((reference[name].astype(np.float64) + scale * update[name]).astype(reference[name].dtype))
        if name in update else array
        for name, array in record.items()
    })


def _with_arrays(reply: Message, record: ArrayRecord) -> Message:
    """A copy of a reply (one ArrayRecord) with ``record`` as its arrays; other records and metadata kept."""
    if record is array_record(reply.content):
        return reply
    content = RecordDict(
        {key: record if isinstance(value, ArrayRecord) else value for key, value in reply.content.items()}
    )
    return Message(content=content, metadata=reply.metadata)
