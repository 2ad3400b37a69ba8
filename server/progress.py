"""One readable progress line per round."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

HEADLINE = ("rmse", "mae", "pcc", "ccc", "accuracy", "f1", "auc")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def progress_line(server_round: int, rounds: int, entry: Mapping[str, Any]) -> str:
    """``round 3/10 | train-loss 0.41 | eval rmse 0.210 ... | up 1.2 MB down 2.4 MB | rejected 0``."""
    evaluation = entry.get("eval") or {}
    parts = [f"[fedmpdrm] round {server_round}/{rounds}" + (" (untrained)" if server_round == 0 else "")]
    train = entry.get("train") or {}
    if "train-loss" in train:
        parts.append(f"train-loss {_num(train['train-loss'])}")
    shown = [f"{k} {_num(evaluation[k])}" for k in HEADLINE if k in evaluation]
    parts.append("eval " + (" ".join(shown) if shown else "n/a"))
    if "bytes_up" in entry:
        parts.append(f"up {_fmt_bytes(entry['bytes_up'])} down {_fmt_bytes(entry['bytes_down'])}")
    if entry.get("rejected"):
        parts.append(f"rejected {len(entry['rejected'])}")
    return " | ".join(parts)
