"""Starting weights of a run (run config ``init``): a data-only file of shared weights.

The recommended DP recipe pretrains the shared branches on data no site owns (public data;
a synthetic cohort from another seed stands in for it) with ``strategy=centralized``, which
writes ``<run-dir>/shared.safetensors``; a federated run then starts from it with
``init=<that file>`` and fine-tunes privately. The file is a :mod:`mpdrm.tensorfile` tree
``{"format", "weights": {name: tensor}, "source": {...}}``: nothing in it can run code, and a
file that does not fit the run's model is refused with a message naming it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import tensorfile

INIT_FORMAT = "fedmpdrm-init/1"
#: The file ``strategy=centralized`` writes into its run folder.
INIT_FILE = "shared.safetensors"


class InitFileError(ValueError):
    """An ``init`` file that is not a weights file of this run's model."""


def save_initial_weights(path: Path | str, weights: Mapping[str, torch.Tensor], source: Mapping[str, Any]) -> Path:
    """Write ``weights`` (name -> tensor) and where they come from (plain JSON-able data)."""
    path = Path(path)
    tree = {"format": INIT_FORMAT, "weights": {k: v.detach().cpu() for k, v in weights.items()},
            "source": dict(source)}
    tensorfile.save(path, tree)
    return path


def load_initial_weights(path: Path | str, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of ``path`` for the names of ``expected`` (name -> tensor of the run's model).

    Raises
    ------
    InitFileError
        When the file is missing, not a weights file, lacks one of the expected names, holds a
        name the run does not share (e.g. site-kept personality weights) or a tensor of another
        shape or dtype. The message names the file and the first problems.
    """
    path = Path(path).expanduser()
    try:
        tree = tensorfile.load(path)
    except (tensorfile.TensorFileError, OSError) as error:
        raise InitFileError(f"init={path}: {error}") from error
    if not isinstance(tree, dict) or tree.get("format") != INIT_FORMAT:
        raise InitFileError(f"init={path}: not a starting-weights file (format {INIT_FORMAT!r} expected)")
    weights = dict(tree.get("weights") or {})
    problems = [f"missing {name}" for name in expected if name not in weights]
    problems += [f"{name} is not shared in this run" for name in weights if name not in expected]
    problems += [f"{name}: {tuple(weights[name].shape)} {weights[name].dtype} in the file, "
                 f"{tuple(ref.shape)} {ref.dtype} in the model"
                 for name, ref in expected.items()
                 if name in weights and (weights[name].shape != ref.shape or weights[name].dtype != ref.dtype)]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InitFileError(f"init={path} does not fit the run's model: {'; '.join(problems[:5])}{more}")
    return {name: weights[name] for name in expected}


__all__ = ["INIT_FILE", "INIT_FORMAT", "InitFileError", "load_initial_weights", "save_initial_weights"]
