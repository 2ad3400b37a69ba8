"""``mpdrm-export``: a site's model directory from the coordinator's checkpoint and the site's state.

For a site that joined late, or lost its model directory: the global shared weights come
from the run folder's checkpoint, the site's local weights from its private state, the run
settings from the run folder's ``summary.json``, the subject index and references from the
site's own prepared data. :func:`export_model_dir` writes the same directory the site
writes at an evaluation of that round (:func:`mpdrm.inference.keep.keep_site_model`).

The files are read as data only (:mod:`mpdrm.tensorfile`): ``checkpoint.safetensors``
(``kind``, ``round``, ``arrays``; ``checkpoint.prev.safetensors`` if the current one is
damaged) and ``site_state.safetensors`` / ``site_state.prev.safetensors`` (``round``,
``local``). This package may not import ``server`` or ``client`` (the layers), so the file
names and keys of ``server.checkpoint.load_checkpoint`` and ``client.state.SiteStateStore``
are repeated here; ``tests/inference`` checks the export against what those write. Files of the older pickle format (``checkpoint.pt``, ``site_state.pt``)
are refused with a message: pickles are never loaded.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpdrm import tensorfile
from mpdrm.contract.sharing import build_site_model, load_weights
from mpdrm.contract.site_data import calibration_offset, site_data

from .keep import MODEL_SUBDIR, keep_site_model, personality_of

CHECKPOINT_FILES = ("checkpoint.safetensors", "checkpoint.prev.safetensors")   # server.checkpoint
CHECKPOINT_KIND = "fedmpdrm-server-checkpoint"
STATE_FILES = ("site_state.safetensors", "site_state.prev.safetensors")      # client.state
LEGACY = {"checkpoint.pt": "checkpoint", "site_state.pt": "site state"}


class ExportError(ValueError):
    """The run folder or the site's state cannot give a model directory; names the file."""


def run_config(run_dir: Path) -> dict[str, Any]:
    """The flat run config recorded in ``run_dir/summary.json``."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ExportError(f"{path}: not found (is {run_dir} a run folder?)")
    return dict(json.loads(path.read_text())["config"])


def _legacy(folder: Path) -> str:
    found = [name for name in LEGACY if (folder / name).is_file()]
    return f" ({found[0]} is the older pickle format, which is never loaded)" if found else ""


def _readable(folder: Path, names: tuple[str, ...], what: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The trees of the files in ``names`` that read as ``what``, and why the others did not."""
    trees, problems = [], []
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            tree = tensorfile.load(path)
        except (tensorfile.TensorFileError, OSError) as error:
            problems.append(str(error))
            continue
        if not isinstance(tree, dict) or not isinstance(tree.get("round"), int):
            problems.append(f"{path}: not a FedMPDRM {what}")
            continue
        trees.append(tree)
    return trees, problems


def read_global(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """``(round, arrays)`` of the coordinator's checkpoint in ``run_dir`` (the previous one if the current is damaged)."""
    run_dir = Path(run_dir)
    trees, problems = _readable(run_dir, CHECKPOINT_FILES, "checkpoint")
    trees = [t for t in trees if t.get("kind") == CHECKPOINT_KIND and "arrays" in t]
    if not trees:
        why = "; ".join(problems) or f"no {' or '.join(CHECKPOINT_FILES)}"
        raise ExportError(f"{run_dir}: no usable checkpoint ({why}){_legacy(run_dir)}")
    tree = trees[0]
    return int(tree["round"]), {k: _tensor(v) for k, v in tree["arrays"].items()}


def read_local(state_dir: Path, server_round: int) -> tuple[int, dict[str, torch.Tensor]]:
    """``(round, local)`` of the site's state for ``server_round``: that round's, else the newest before it."""
    state_dir = Path(state_dir)
    states, problems = _readable(state_dir, STATE_FILES, "site state")
    usable = [s for s in states if int(s["round"]) <= server_round and "local" in s]
    if not usable:
        why = "; ".join(problems) or f"{' or '.join(STATE_FILES)} of round <= {server_round}"
        raise ExportError(f"{state_dir}: no usable site state ({why}){_legacy(state_dir)}")
    state = max(usable, key=lambda s: int(s["round"]))
    return int(state["round"]), {k: _tensor(v) for k, v in state["local"].items()}


def _tensor(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def export_model_dir(out: Path, cfg: Mapping[str, Any], shared: Mapping[str, Any], local: Mapping[str, Any], *,
                     site_dir: Path, server_round: int, run_id: int | None = None) -> Path:
    """Write the model directory of the site at ``site_dir`` for these weights.

    Parameters
    ----------
    out : Path
        The model directory to write.
    cfg : Mapping
        The run's flat config (``summary.json``'s ``config``).
    shared, local : Mapping
        The global shared weights (checkpoint) and the site's local weights (its state).
    site_dir : Path
        The site folder, prepared with the run's ``prepare.*`` settings.
    server_round, run_id
        Recorded in ``model.json``.
    """
    data = site_data(Path(site_dir).resolve(), cfg)
    model = build_site_model(cfg, data.num_subjects)
    load_weights(model, {k: _tensor(v) for k, v in shared.items()}, {k: _tensor(v) for k, v in local.items()})
    model.eval()
    return keep_site_model(Path(out), model, data, cfg, site=data.name, run_id=run_id, server_round=server_round,
                           personality=personality_of(cfg), calibration_offset=calibration_offset(model, data, cfg))


def export_from_run(run_dir: Path, state_dir: Path, site_dir: Path, out: Path | None = None,
                    run_id: int | None = None) -> Path:
    """:func:`export_model_dir` from the files: checkpoint, summary, site state (default out: ``STATE_DIR/model``)."""
    server_round, shared = read_global(run_dir)
    _, local = read_local(state_dir, server_round)
    return export_model_dir(out or Path(state_dir) / MODEL_SUBDIR, run_config(run_dir), shared, local,
                            site_dir=site_dir, server_round=server_round, run_id=run_id)


__all__ = ["ExportError", "export_from_run", "export_model_dir", "read_global", "read_local", "run_config"]
