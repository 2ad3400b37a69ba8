"""PNG plots of a summary's per-round curves: one figure per metric, overall and per site."""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SKIP = {"num-examples", "num-sites", "site-id", "train-steps", "train-seconds"}


def _points(summary: Mapping[str, Any], stage: str) -> list[tuple[int, Mapping[str, Any]]]:
    points: list[tuple[int, Mapping[str, Any]]] = []
    initial = summary.get("initial") or {}
    if stage == "eval" and initial.get("eval"):
        points.append((0, initial["eval"]))
    points += [(r["round"], r.get(stage) or {}) for r in summary.get("rounds", [])]
    return points


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_names(summary: Mapping[str, Any], stage: str) -> list[str]:
    """Scalar metric names reported in ``stage`` (``eval`` or ``train``)."""
    names: set[str] = set()
    for _, block in _points(summary, stage):
        names |= {k for k, v in block.items() if k not in SKIP and _finite(v)}
        for site in (block.get("per_site") or {}).values():
            names |= {k for k, v in site.items() if k not in SKIP and _finite(v)}
    return sorted(names)


def write_plots(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write ``<stage>_<metric>.png`` for every metric; returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for stage in ("eval", "train"):
        points = _points(summary, stage)
        for name in metric_names(summary, stage):
            fig, ax = plt.subplots(figsize=(6, 4))
            sites = sorted({s for _, b in points for s in (b.get("per_site") or {})})
            for site in sites:
                xy = [(r, b["per_site"][site][name]) for r, b in points
                      if site in (b.get("per_site") or {}) and _finite(b["per_site"][site].get(name))]
                if xy:
                    ax.plot(*zip(*xy), marker="o", linewidth=1, alpha=0.7, label=site)
            overall = [(r, b[name]) for r, b in points if _finite(b.get(name))]
            if overall:
                ax.plot(*zip(*overall), marker="s", linewidth=2.5, color="black", label="overall")
            ax.set_xlabel("round")
            ax.set_ylabel(name)
            ax.set_title(f"{stage}: {name} ({summary.get('mode', '')})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{stage}_{name.replace('/', '_')}.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            files.append(path)
    return files
