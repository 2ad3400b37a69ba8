"""Using the trained model at a site: load its model directory, score visits, enrol patients.

Flower-free. ``load_model_dir(path) -> SiteModel`` (:mod:`mpdrm.inference.model`); the site
writes ``STATE_DIR/model/`` at every evaluation (:func:`mpdrm.inference.keep.keep_site_model`),
``mpdrm-export`` rebuilds it from a checkpoint and a site state
(:mod:`mpdrm.inference.export`); the command lines are in :mod:`mpdrm.inference.cli`.
"""
from __future__ import annotations

from .keep import MODEL_SUBDIR, keep_site_model
from .model import ClipScores, ScoringError, SiteModel, VideoScore, load_model_dir
from .modeldir import ModelDirError

__all__ = ["MODEL_SUBDIR", "ClipScores", "ModelDirError", "ScoringError", "SiteModel", "VideoScore",
           "keep_site_model", "load_model_dir"]
