"""A site's data from the run config (the site's client and the centralized baseline): loaded once per
process from the prepared clip cache, batched per round."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mpdrm.calibration import check_calibration, fit_site_offset
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
        ``data.task``, ``seed``, ``eval.protocol``).
    """
    prep = prepare_config(cfg)
    key = json.dumps([str(data_dir), repr(prep), cfg["data.test_fraction"], cfg["data.score_max"], cfg["data.task"],
                      cfg["seed"], cfg["eval.protocol"]])
    if key not in _CACHE:
        _CACHE[key] = load_site(
            data_dir,
            prep,
            test_fraction=float(cfg["data.test_fraction"]),
            seed=int(cfg["seed"]),
            score_max=float(cfg["data.score_max"]),
            task=str(cfg["data.task"]),
            protocol=str(cfg["eval.protocol"]),
        )
    return _CACHE[key]


def evaluated_visits(sites: list[Path], cfg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(site, subject, visit)`` of every scored video of these sites under the run's split."""
    return sorted((p.name, v["subject"], int(v["visit"])) for p in sites for v in site_data(p, cfg).test.videos)


def personality_mode(cfg: Mapping[str, Any]) -> str:
    """``eval.personality`` with ``auto`` resolved: ``reference`` when ``eval.protocol`` knows
    the person beforehand (``visits``, ``enrolled``), else ``clip``."""
    mode = str(cfg["eval.personality"])
    if mode == "auto":
        return "clip" if str(cfg["eval.protocol"]) == "subjects" else "reference"
    return mode


def personality_source(data: Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``personality`` and ``reference`` keywords of :func:`mpdrm.training.evaluate` for a site."""
    mode = personality_mode(cfg)
    if mode != "reference":
        return {"personality": mode}
    if data.reference is None:
        raise ValueError(f"eval.personality=reference needs a protocol that knows the person "
                         f"(visits | enrolled), not eval.protocol={cfg['eval.protocol']}")
    return {"personality": mode, "reference": eval_loader(data.reference, cfg)}


def calibration_offset(model: Any, data: Any, cfg: Mapping[str, Any]) -> float | None:
    """The site's ``eval.calibration`` offset for ``model`` (:func:`mpdrm.calibration.fit_site_offset`
    on its training clips); ``None`` when calibration is off, the task is not regression or the
    site has no training clips."""
    mode = check_calibration(str(cfg.get("eval.calibration", "none")))
    if mode == "none" or str(cfg["data.task"]) != "regression" or not len(data.train):
        return None
    return fit_site_offset(model, eval_loader(data.train, cfg), scoring=personality_mode(cfg))


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
