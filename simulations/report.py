"""The final table printed at the end of a simulation."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from server.progress import HEADLINE


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def final_table(summary: Mapping[str, Any]) -> str:
    """Rows: each site and overall; columns: the headline metrics, untrained -> final."""
    final = summary.get("final") or {}
    initial = (summary.get("initial") or {}).get("eval") or {}
    metrics = [m for m in HEADLINE if m in final] or [m for m in HEADLINE if m in initial]
    rows = [("site", *[f"{m} (untrained -> final)" for m in metrics])]
    names = sorted(set(final.get("per_site", {})) | set(initial.get("per_site", {})))
    for name in [*names, "overall"]:
        fin = final if name == "overall" else final.get("per_site", {}).get(name, {})
        ini = initial if name == "overall" else initial.get("per_site", {}).get(name, {})
        rows.append((name, *[f"{_fmt(ini.get(m))} -> {_fmt(fin.get(m))}" for m in metrics]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total_up = sum(r.get("bytes_up", 0) for r in summary.get("rounds", []))
    total_down = sum(r.get("bytes_down", 0) for r in summary.get("rounds", []))
    lines.append(
        f"mode {summary.get('mode')} | rounds {len(summary.get('rounds', []))} | "
        f"bytes up {total_up:,} down {total_down:,} | wall {summary.get('wall_seconds', 0):.0f} s"
    )
    for name, values in (summary.get("reference") or {}).items():
        shown = " ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        lines.append(f"reference (synthetic cohort truth) {name}: {shown}")
    return "\n".join(lines)
