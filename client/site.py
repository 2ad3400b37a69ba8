"""Which site a ClientApp instance serves, where its data and private state live."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpdrm.contract.sites import PARTITION_ID_KEY, cohort_sites, stable_site_id

__all__ = ["PARTITION_ID_KEY", "Site", "cohort_sites", "resolve_site", "stable_site_id"]


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
    simulated : bool
        A simulation partition: its replies name it (``mpdrm.contract.keys.SITE``); a
        deployed site's replies carry only its id.
    """

    name: str
    site_id: int
    data_dir: Path
    state_dir: Path
    simulated: bool = False


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
        # No run config 'cohort': the default synthetic cohort with one site per partition
        # (node config 'num-partitions'), generated and prepared once under the cache
        # (mpdrm.data.cohorts.run_cohort); the sites' state then goes to <run-dir>/site-state.
        from mpdrm.data.cohorts import run_cohort

        from mpdrm.contract.site_data import prepare_config  # the clip settings the site reads with

        num_sites = int(node_config.get("num-partitions", 0) or 0)
        if not str(run_config.get("cohort", "")) and num_sites < 1:
            raise ValueError("simulation node without run config 'cohort' nor node config 'num-partitions'")
        cohort = str(run_cohort(run_config, num_sites, prepare_config(run_config)))
        sites = cohort_sites(Path(cohort))
        pid = int(node_config[PARTITION_ID_KEY])
        if not 0 <= pid < len(sites):
            raise ValueError(f"partition-id {pid} but {cohort} has {len(sites)} sites")
        data_dir = sites[pid].resolve()
        # A given cohort keeps the sites' state beside it; the shared default cohort does not.
        default_root = Path(cohort) / ".mpdrm-state"
        if not run_config.get("cohort"):
            default_root = Path(str(run_config.get("run-dir", "runs/server"))) / "site-state"
        root = str(run_config.get("state-root", "")) or str(default_root)
        return Site(data_dir.name, pid, data_dir, (Path(root) / data_dir.name).resolve(), simulated=True)
    raise ValueError("node config has neither 'data-path' (deployment) nor 'partition-id' (simulation)")
