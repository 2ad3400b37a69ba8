"""Metric aggregation: per-site metrics plus example-weighted averages.

Unlike Flower's ``aggregate_metricrecords``, sites may report different metric keys
(e.g. ``epsilon`` only under client-side DP): each key is averaged over the sites that
report a finite scalar for it. Lists are kept per site only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from flwr.app import Message, MetricRecord

from .ordering import site_id_of
from .validation import metric_record

MetricValue = int | float | list[int] | list[float]
SiteMetrics = dict[str, MetricValue]


def per_site_metrics(
    replies: Sequence[Message], site_id_key: str = "site-id"
) -> dict[int, SiteMetrics]:
    """Return ``site id -> metrics`` of validated replies (site id key removed).

    Parameters
    ----------
    replies : Sequence[Message]
        Validated replies, each with exactly one MetricRecord.
    site_id_key : str (default: "site-id")
        Metric holding the site id.

    Returns
    -------
    dict[int, SiteMetrics]
        Plain Python values, sorted by site id.
    """
    result: dict[int, SiteMetrics] = {}
    for reply in sorted(replies, key=lambda message: site_id_of(message, site_id_key)):
        metrics = metric_record(reply.content)
        result[site_id_of(reply, site_id_key)] = {
            key: (list(value) if isinstance(value, list) else value)
            for key, value in metrics.items()
            if key != site_id_key
        }
    return result


def weighted_average(
    per_site: Mapping[int, Mapping[str, MetricValue]],
    weighted_by_key: str = "num-examples",
) -> MetricRecord:
    """Average each scalar metric over sites, weighted by ``weighted_by_key``.

    Parameters
    ----------
    per_site : Mapping[int, Mapping[str, MetricValue]]
        ``site id -> metrics``, each holding ``weighted_by_key``.
    weighted_by_key : str (default: "num-examples")
        The weight of each site; the result holds its total.

    Returns
    -------
    MetricRecord
        One float per scalar metric key, plus the total ``weighted_by_key`` and
        ``num-sites``. Non-finite values are left out of their key's average.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for site in sorted(per_site):
        metrics = per_site[site]
        weight = float(metrics[weighted_by_key])  # type: ignore[arg-type]
        for key, value in metrics.items():
            if key == weighted_by_key or isinstance(value, (bool, list)):
                continue
            if not math.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + weight * float(value)
            weights[key] = weights.get(key, 0.0) + weight
    result = MetricRecord({key: sums[key] / weights[key] for key in sorted(sums)})
    totals = [per_site[site][weighted_by_key] for site in sorted(per_site)]
    result[weighted_by_key] = sum(totals)  # type: ignore[arg-type]
    result["num-sites"] = len(per_site)
    return result
