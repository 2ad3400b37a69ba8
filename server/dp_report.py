"""Privacy in ``summary.json``, and the end of a run whose sites ran out of budget.

Client-side DP (``dp.mode = "opacus"``): each training reply carries the site's
``epsilon`` and its ledger totals (``dp-*`` metrics, see ``client.privacy``). The summary
gets a top-level ``dp`` object ``{"<site>": {"noise_multiplier", "sample_rate", "steps",
"delta", "epsilon"}}`` (totals so far) and every round an ``epsilon`` object
``{"<site>": e}`` (every site known so far; a site that declined keeps its epsilon).

Central DP (``dp.mode = "central"``): every round gets ``central_dp`` (noise, clipping
norm and, when accounted, the cumulative ``epsilon`` at ``delta``), and the summary the
latest one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import Strategy

from mpdrm.contract.keys import dp_totals

from .central_dp import central_dp_round

def record_round_dp(summary: dict[str, Any], entry: dict[str, Any], strategy: Strategy) -> None:
    """Add this round's privacy figures to ``entry`` and the run totals to ``summary``.

    Parameters
    ----------
    summary : dict
        The run summary (gets ``dp`` and ``central_dp``).
    entry : dict
        The round's ``rounds[]`` entry, with site names as ``per_site`` keys.
    strategy : Strategy
        The run's strategy (searched for a central-DP wrapper).
    """
    for site, metrics in (entry.get("train", {}).get("per_site") or {}).items():
        totals = dp_totals(metrics)
        if totals is not None:
            summary.setdefault("dp", {})[str(site)] = totals
    if summary.get("dp"):
        entry["epsilon"] = {site: values["epsilon"] for site, values in sorted(summary["dp"].items())}
    central = central_dp_round(strategy)
    if central is not None:
        entry["central_dp"] = central
        summary["central_dp"] = central


def _site(site_id: Any, names: Mapping[str, str]) -> str:
    return names.get(str(site_id), str(site_id))


def budget_stop(summary: Mapping[str, Any], min_sites: int) -> str | None:
    """Why the run must end now, or ``None``: too few sites left with privacy budget.

    A site that declined a round for its budget declines every later one (its
    epsilon only grows), so once the sites known to the server minus those falls
    below ``min_sites``, no later round could aggregate.
    """
    names = summary.get("sites") or {}
    known: set[str] = set()
    exhausted: set[str] = set()
    for entry in summary.get("rounds", []):
        for stage in ("train", "eval"):
            known.update(str(s) for s in (entry.get(stage, {}).get("per_site") or {}))
        for rejection in entry.get("rejected", []):
            if rejection.get("site_id") is None:
                continue
            site = _site(rejection["site_id"], names)
            known.add(site)
            if rejection.get("stage") == "train" and rejection.get("budget_exhausted"):
                exhausted.add(site)
    left = known - exhausted
    if exhausted and len(left) < int(min_sites):
        return (f"privacy budget exhausted at {sorted(exhausted)}: {len(left)} site(s) left with budget, "
                f"fewer than min-sites={min_sites}")
    return None
