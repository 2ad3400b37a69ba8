"""Site ids, cohort folders and derived seeds: the rules both apps apply the same way."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any

#: Node-config key of a simulated site (Flower sets it; the i-th sorted cohort folder).
PARTITION_ID_KEY = "partition-id"


def stable_site_id(name: str) -> int:
    """Stable id of a site from its folder name (CRC32, fits a signed 64-bit int)."""
    return zlib.crc32(name.encode("utf-8"))


def cohort_sites(cohort: Path) -> list[Path]:
    """Site folders of a cohort, sorted by name (partition id ``i`` -> ``i``-th folder)."""
    if not cohort.is_dir():
        raise FileNotFoundError(f"{cohort}: cohort folder does not exist")
    sites = sorted(p for p in cohort.iterdir() if p.is_dir() and (p / "manifest.csv").is_file())
    if not sites:
        raise FileNotFoundError(f"{cohort}: no site folder with a manifest.csv")
    return sites


def site_names(cohort: str | Path | None) -> dict[str, str]:
    """Site id -> folder name of a simulated cohort (``{}`` when there is none)."""
    if not cohort or not Path(cohort).is_dir():
        return {}
    return {str(i): p.name for i, p in enumerate(cohort_sites(Path(cohort)))}


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
