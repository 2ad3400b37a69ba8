"""Which site a ClientApp instance serves, where its data and private state live."""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTITION_ID_KEY = "partition-id"


@dataclass(frozen=True)
class Site:
    """A site as seen by its own client.

    Attributes
    ----------
    name : str
        Folder name of the site (e.g. ``site-01``).
    site_id : int
        Stable id reported to the server (replies are sorted by it).
    data_dir : Path
        The site folder (``manifest.csv`` + ``videos/``).
    state_dir : Path
        Where the site keeps its private state (personality weights, optimizer, RNG).
    """

    name: str
    site_id: int
    data_dir: Path
    state_dir: Path


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


def resolve_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> Site:
    """Find the site of this node.

    Deployment: node config ``data-path`` (the site folder), ``state-dir`` (default
    ``<data-path>/.mpdrm-state``) and optional ``site-id`` (default: CRC32 of the folder
    name). Simulation: node config ``partition-id`` selects the sorted site folder of
    run config ``cohort``; the state goes to ``<state-root>/<site name>``.

    Parameters
    ----------
    node_config : Mapping
        The node's config (``context.node_config``).
    run_config : Mapping
        The merged run config.

    Returns
    -------
    Site
    """
    if "data-path" in node_config:
        data_dir = Path(str(node_config["data-path"])).expanduser().resolve()
        if not (data_dir / "manifest.csv").is_file():
            raise FileNotFoundError(f"{data_dir}: node config data-path has no manifest.csv")
        state_dir = Path(str(node_config.get("state-dir") or data_dir / ".mpdrm-state"))
        raw_id = node_config.get("site-id", "")
        site_id = int(raw_id) if str(raw_id) != "" else stable_site_id(data_dir.name)
        return Site(data_dir.name, site_id, data_dir, state_dir.expanduser().resolve())
    if PARTITION_ID_KEY in node_config:
        cohort = str(run_config.get("cohort", ""))
        if not cohort:
            raise ValueError("simulation node without run config 'cohort' (the cohort folder)")
        sites = cohort_sites(Path(cohort))
        pid = int(node_config[PARTITION_ID_KEY])
        if not 0 <= pid < len(sites):
            raise ValueError(f"partition-id {pid} but {cohort} has {len(sites)} sites")
        data_dir = sites[pid].resolve()
        root = str(run_config.get("state-root", "")) or str(Path(cohort) / ".mpdrm-state")
        return Site(data_dir.name, pid, data_dir, (Path(root) / data_dir.name).resolve())
    raise ValueError("node config has neither 'data-path' (deployment) nor 'partition-id' (simulation)")
