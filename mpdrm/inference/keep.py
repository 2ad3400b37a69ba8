"""Build a site's model directory from the evaluated model and the site's own data.

Used by the site at every evaluation (``client.handlers``) and by ``mpdrm-export``; both
call :func:`keep_site_model`, so both write the same directory for the same weights.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.contract.site_data import prepare_config

from .modeldir import write_model_dir

#: ``STATE_DIR/<MODEL_SUBDIR>``: where a site keeps its model.
MODEL_SUBDIR = "model"


def personality_of(cfg: Mapping[str, Any]) -> str:
    """The run's personality mode (``eval.personality``; ``auto``: ``clip`` under the
    ``subjects`` protocol, else ``reference``), recorded in ``model.json``."""
    mode = str(cfg.get("eval.personality", "clip"))
    if mode == "auto":
        return "clip" if str(cfg.get("eval.protocol", "subjects")) == "subjects" else "reference"
    return mode


@torch.no_grad()
def subject_references(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Subject index -> normalised mean personality embedding of its clips (batch order kept).

    Sums per batch in the order of ``batches``, as :func:`mpdrm.training.predict` does, so the
    same clips give the same reference.
    """
    bare = mpdrm.unwrap(model)
    if bare.personality is None:
        return {}
    was = bare.training
    bare.eval()
    sums: dict[int, torch.Tensor] = {}
    try:
        for batch in batches:
            p = bare.personality_embedding(batch["clips"])
            subj = batch["subject"]
            for s in torch.unique(subj).tolist():
                part = p[subj == s].sum(0)
                sums[s] = sums[s] + part if s in sums else part
    finally:
        bare.train(was)
    return {s: torch.nn.functional.normalize(v, dim=0) for s, v in sums.items()}


def training_references(model: torch.nn.Module, data: Any, batch_size: int) -> dict[str, Any]:
    """``{"ids", "reference"}``: each training subject's id and reference (rows in id order)."""
    ids = list(data.subject_ids)
    refs = subject_references(model, DataLoader(data.train, batch_size=batch_size, shuffle=False)) if len(data.train) else {}
    if not refs:
        return {"ids": ids, "reference": None}
    dim = next(iter(refs.values())).numel()
    rows = [refs.get(i, torch.full((dim,), float("nan"))) for i in range(len(ids))]
    return {"ids": ids, "reference": torch.stack(rows).contiguous()}


def model_meta(model: torch.nn.Module, data: Any, cfg: Mapping[str, Any], *, site: str,
               run_id: int | None, server_round: int, personality: str) -> dict[str, Any]:
    """The ``model.json`` content (without the file hashes)."""
    site_dir = Path(data.site_dir) if data.site_dir is not None else None
    prep = prepare_config(cfg)
    prep = prep.resolve(site_dir) if site_dir is not None else prep
    return {
        "model": mpdrm.unwrap(model).config.to_dict(),
        "prepare": dataclasses.asdict(prep),
        "task": str(data.task),
        "num_classes": int(data.num_classes),
        "score_max": float(data.score_max),
        "personality": personality,
        "mode": str(cfg["mode"]),
        "subjects": list(data.subject_ids),
        "site": site,
        "run_id": run_id,
        "round": int(server_round),
    }


def keep_site_model(target: Path, model: torch.nn.Module, data: Any, cfg: Mapping[str, Any], *, site: str,
                    run_id: int | None, server_round: int, personality: str,
                    calibration_offset: float | None = None) -> Path:
    """Write the site's model directory ``target`` for the evaluated ``model``.

    Parameters
    ----------
    target : Path
        Usually ``STATE_DIR/model``.
    model : torch.nn.Module
        The evaluated model: global shared weights + the site's local weights.
    data : SiteData
        The site's data (training subjects: index and references; task and scale).
    cfg : Mapping
        The merged flat run config (``prepare.*``, ``mode``, ``data.eval_batch_size``).
    site, run_id, server_round, personality
        Recorded in ``model.json``.
    calibration_offset : float, optional
        The site's calibration offset (``mpdrm.calibration``), recorded in ``model.json`` and
        added to every score the directory serves; ``None``: no calibration.
    """
    weights = {k: v.detach().cpu().clone() for k, v in mpdrm.unwrap(model).state_dict().items()}
    subjects = training_references(model, data, int(cfg["data.eval_batch_size"]))
    meta = model_meta(model, data, cfg, site=site, run_id=run_id, server_round=server_round, personality=personality)
    meta["calibration"] = {"offset": float(calibration_offset)} if calibration_offset is not None else None
    return write_model_dir(target, weights, subjects, meta)


__all__ = ["MODEL_SUBDIR", "keep_site_model", "model_meta", "personality_of", "subject_references", "training_references"]
