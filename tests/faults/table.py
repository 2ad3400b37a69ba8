"""The harness's table: one row per scripted fault (verdict, seconds to recover).

Rows are collected in :data:`ROWS` by the fault-script tests; ``tests/faults/conftest.py``
writes them to ``benchmarks/results/faults.json`` and ``faults.md`` at the end of the
session and prints the table.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

LEGEND = ("recover s: site faults, seconds from the fault until the faulted stage closed (a healthy site got "
          "its next instruction, or the round was checkpointed); silenced site: seconds from the last healthy "
          "reply's Sending line to the next instruction (round-grace plus upload and aggregation); straggler, restarted site, truncated state: "
          "until that site's next reply was sent; coordinator killed: until the resumed run checkpointed the "
          "interrupted round again; truncated checkpoint: until the resumed run wrote its next checkpoint; "
          "disk full: until the run resumed after freeing the disk checkpointed the lost round; too few sites: "
          "until the run ended failed (round-timeout plus the end of the run).")


@dataclass
class Row:
    """One fault's outcome.

    Attributes
    ----------
    script : str
        The script (one federation).
    fault : str
        The fault in words.
    verdict : str
        What happened (completed / failed, and how).
    ok : bool
        Handled as required, nothing written before it lost.
    recover_s : float or None
        Seconds to recover (see :data:`LEGEND`).
    detail : str
        Evidence (rejection reasons, warnings, weights compared).
    """

    script: str
    fault: str
    verdict: str
    ok: bool
    recover_s: float | None = None
    detail: str = ""


ROWS: list[Row] = []
WALLS: dict[str, float] = {}
#: Script -> its events as ``[seconds from the run's start, who, kind, stage, round]``.
TIMELINES: dict[str, list[list]] = {}


def markdown(rows: list[Row], walls: dict[str, float]) -> str:
    """The table as Markdown, with the legend and each script's wall time."""
    lines = ["| script | fault | verdict | ok | recover s |", "|---|---|---|---|---|"]
    for row in rows:
        rec = "" if row.recover_s is None else f"{row.recover_s:.1f}"
        lines.append(f"| {row.script} | {row.fault} | {row.verdict} | {'yes' if row.ok else 'NO'} | {rec} |")
    walls_line = ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
    return "\n".join([*lines, "", LEGEND, "", f"Wall time per script: {walls_line}."])


def _earlier(folder: Path, scripts: set[str]) -> dict:
    """What ``faults.json`` holds of scripts other than ``scripts`` (another test process
    ran them: each writes only its own)."""
    try:
        data = json.loads((folder / "faults.json").read_text())
    except (OSError, ValueError):
        return {"rows": [], "wall_seconds": {}, "timelines": {}}
    return {"rows": [r for r in data.get("rows", []) if r.get("script") not in scripts],
            "wall_seconds": {k: v for k, v in data.get("wall_seconds", {}).items() if k not in scripts},
            "timelines": {k: v for k, v in data.get("timelines", {}).items() if k not in scripts}}


def write(rows: list[Row], walls: dict[str, float], folder: Path = RESULTS) -> Path:
    """Write ``faults.json`` and ``faults.md`` into ``folder``, keeping the rows of the
    scripts this process did not run; returns the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    earlier = _earlier(folder, {r.script for r in rows} | set(walls))
    all_rows = [*(Row(**r) for r in earlier["rows"]), *rows]
    all_walls = {**earlier["wall_seconds"], **walls}
    data = {"written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "legend": LEGEND,
            "wall_seconds": all_walls, "rows": [asdict(r) for r in all_rows],
            "timelines": {**earlier["timelines"], **TIMELINES}}
    (folder / "faults.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / "faults.md").write_text(markdown(all_rows, all_walls) + "\n")
    return folder / "faults.json"
