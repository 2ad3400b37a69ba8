"""Where every benchmark's figures go: one JSON file under benchmarks/results/."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def write_report(path: Path | str, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON to ``path`` (creating its folder) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def quick_paths(args: Any, default_work: Path, default_out: Path) -> None:
    """With ``--quick``, a work folder and an output left at their defaults get a ``-quick``
    suffix (``runs-quick/``, ``name-quick.json``), so reduced runs never mix with full ones;
    the work folder is made absolute either way."""
    if args.quick:
        if args.work == default_work:
            args.work = default_work.with_name(default_work.name + "-quick")
        if args.out == default_out:
            args.out = default_out.with_name(default_out.stem + "-quick.json")
    args.work = Path(args.work).resolve()
