"""A site's data from the run config (the site's client and the centralized baseline): loaded once per
process from the prepared clip cache, batched per round."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mpdrm.contract.runconfig import run_prepare_config, section
from mpdrm.data import load_site
from mpdrm.data.prepare import PrepareConfig
from mpdrm.data.sampler import PKBatchSampler

_CACHE: dict[str, Any] = {}


def prepare_config(cfg: Mapping[str, Any]) -> PrepareConfig:
    """The clip-preparation settings of the run (run config keys ``prepare.*``)."""
    return run_prepare_config(cfg)


def site_data(data_dir: Path, cfg: Mapping[str, Any]) -> Any:
    """The site's ``SiteData`` (train/test split), cached per process and settings.

    Parameters
    ----------
    data_dir : Path
        The site folder.
    cfg : Mapping
        Merged run config (``prepare.*``, ``data.test_fraction``, ``data.score_max``,
        ``data.task``, ``seed``).
    """
    prep = prepare_config(cfg)
    key = json.dumps(
        [str(data_dir), repr(prep), cfg["data.test_fraction"], cfg["data.score_max"], cfg["data.task"], cfg["seed"]]
    )
    if key not in _CACHE:
        _CACHE[key] = load_site(
            data_dir,
            prep,
            test_fraction=float(cfg["data.test_fraction"]),
            seed=int(cfg["seed"]),
            score_max=float(cfg["data.score_max"]),
            task=str(cfg["data.task"]),
        )
    return _CACHE[key]


def train_loader(dataset: Any, cfg: Mapping[str, Any], seed: int) -> DataLoader:
    """Training batches: P subjects x K clips (``data.pk_p``, ``data.pk_k``) when set, else shuffled.

    P x K batches give every clip a same-subject positive for the contrastive loss.
    """
    data = section(cfg, "data")
    workers = int(data.get("workers", 0))
    p, k = int(data.get("pk_p", 0) or 0), int(data.get("pk_k", 0) or 0)
    if p > 0 and k > 0:
        return DataLoader(dataset, batch_sampler=PKBatchSampler(dataset, p=p, k=k, seed=seed), num_workers=workers)
    return DataLoader(dataset, batch_size=int(data["batch_size"]), shuffle=True, drop_last=False, num_workers=workers)


def eval_loader(dataset: Any, cfg: Mapping[str, Any]) -> DataLoader:
    """Evaluation batches in dataset order."""
    return DataLoader(dataset, batch_size=int(cfg["data.eval_batch_size"]), shuffle=False, num_workers=int(cfg["data.workers"]))
