"""PNG plots of a summary's per-round curves: one figure per stage (``eval.png``, ``train.png``)
with a panel per metric, overall and per site. One file per stage rather than per metric:
saving a figure is most of the cost (a 6-round summary: 18 files 3.0 s, 2 files 1.2 s)."""
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


def _panel(ax: Any, points: list[tuple[int, Mapping[str, Any]]], name: str) -> None:
    """One metric's curves: each site's, and the overall one in black."""
    sites = sorted({s for _, b in points for s in (b.get("per_site") or {})})
    for site in sites:
        xy = [(r, b["per_site"][site][name]) for r, b in points
              if site in (b.get("per_site") or {}) and _finite(b["per_site"][site].get(name))]
        if xy:
            ax.plot(*zip(*xy), marker="o", linewidth=1, alpha=0.7, label=site)
    overall = [(r, b[name]) for r, b in points if _finite(b.get(name))]
    if overall:
        ax.plot(*zip(*overall), marker="s", linewidth=2.5, color="black", label="overall")
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("round", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def write_plots(summary: Mapping[str, Any], out_dir: Path, columns: int = 3) -> list[Path]:
    """Write ``<stage>.png`` (``eval``, ``train``) with a panel per metric; returns the files.

    Parameters
    ----------
    summary : Mapping
        A run's ``summary.json``.
    out_dir : Path
        Folder of the PNGs (created).
    columns : int
        Panels per row.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for stage in ("eval", "train"):
        points = _points(summary, stage)
        names = metric_names(summary, stage)
        if not names:
            continue
        rows = math.ceil(len(names) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            _panel(ax, points, name)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", fontsize=7)
        fig.suptitle(f"{stage} per round ({summary.get('mode', '')})", fontsize=10)
        fig.subplots_adjust(left=0.07, right=0.9, bottom=0.08, top=0.9, hspace=0.6, wspace=0.3)
        path = out_dir / f"{stage}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        files.append(path)
    return files
