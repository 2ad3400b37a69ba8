"""Where every benchmark's figures go: one JSON file under benchmarks/results/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: Path | str, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON to ``path`` (creating its folder) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
