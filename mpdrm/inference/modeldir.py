"""A site's model directory: everything needed to score a new visit at the site.

``MODEL_DIR/``::

    weights.safetensors    the evaluated model: global shared + the site's local weights
                           (data-only, :mod:`mpdrm.tensorfile`; name -> tensor)
    subjects.safetensors   the site's training subjects: ids and personality references
                           (normalised mean embedding of each one's training clips)
    model.json             model config, PrepareConfig, task, score scale, personality mode,
                           subject index, site, run id, round, content SHA-256 of both files
    enrolled.safetensors   patients enrolled at the site (``mpdrm-enroll``), if any; a
    enrolled.json          separate file, so the weights stay as trained

The hashes in ``model.json`` are of the files' content (:func:`content_sha256`: names,
dtypes, shapes, bytes and the non-tensor values), not of their bytes: the safetensors
header's metadata order varies from one write to the next, so equal content may be written
as different bytes.

The directory is written whole into a temporary sibling and renamed into place; the
previous directory is kept until the new one is complete. Nothing in it leaves the site.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpdrm import tensorfile
from mpdrm.persistence import atomic_write_bytes

FORMAT = "fedmpdrm-site-model/1"
WEIGHTS_FILE = "weights.safetensors"
SUBJECTS_FILE = "subjects.safetensors"
META_FILE = "model.json"
ENROLLED_FILE = "enrolled.safetensors"
ENROLLED_META = "enrolled.json"
#: Files carried over when the model directory is rewritten (enrolments made at the site).
CARRIED = (ENROLLED_FILE, ENROLLED_META)


class ModelDirError(ValueError):
    """A model directory that cannot be used (missing, incomplete, altered); names the path."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(tree: Any) -> str:
    """SHA-256 of a tree's content: tensors by dtype, shape and bytes, the rest as JSON, dict keys sorted."""
    h = hashlib.sha256()

    def walk(node: Any) -> None:
        if isinstance(node, (torch.Tensor, np.ndarray)):
            t = torch.as_tensor(node).detach().cpu().contiguous()
            h.update(f"T|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            h.update(b"{")
            for key in sorted(node, key=str):
                h.update(json.dumps(str(key)).encode() + b":")
                walk(node[key])
            h.update(b"}")
        elif isinstance(node, (list, tuple)):
            h.update(b"[")
            for item in node:
                walk(item)
            h.update(b"]")
        else:
            h.update(json.dumps(node).encode())

    walk(tree)
    return h.hexdigest()


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, indented): equal content gives equal bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_model_dir(target: Path, weights: Mapping[str, torch.Tensor], subjects: Mapping[str, Any],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``target`` atomically (temp dir + rename); enrolments already there are carried over.

    Parameters
    ----------
    target : Path
        The model directory (e.g. ``STATE_DIR/model``).
    weights : Mapping
        name -> tensor, the full state of the evaluated model.
    subjects : Mapping
        ``{"ids": [...], "reference": Tensor (S, E) or None}``.
    meta : Mapping
        The rest of ``model.json`` (the file hashes and format are added here).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    trees = {WEIGHTS_FILE: {k: v.detach().cpu().contiguous() for k, v in weights.items()}, SUBJECTS_FILE: dict(subjects)}
    try:
        for name, tree in trees.items():
            tensorfile.save(tmp / name, tree)
        full = {**meta, "format": FORMAT, "files": {name: content_sha256(tree) for name, tree in trees.items()}}
        atomic_write_bytes(tmp / META_FILE, json_bytes(full))
        for name in CARRIED:
            if (target / name).is_file():
                shutil.copy2(target / name, tmp / name)
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; the old directory is removed only once the new one is in place."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(model_dir: Path) -> dict[str, Any]:
    """``model.json`` of ``model_dir``, checked for its format and the presence of its files."""
    model_dir = Path(model_dir)
    path = model_dir / META_FILE
    if not path.is_file():
        raise ModelDirError(f"{model_dir}: not a model directory (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelDirError(f"{path}: unreadable ({error})") from None
    if meta.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not a {FORMAT} model directory (format {meta.get('format')!r})")
    for name in meta["files"]:
        if not (model_dir / name).is_file():
            raise ModelDirError(f"{model_dir / name}: missing (incomplete model directory)")
    return meta


def read_tree(model_dir: Path, name: str, meta: Mapping[str, Any]) -> Any:
    """Load one file of the model directory and check it against ``model.json``'s content hash."""
    path = Path(model_dir) / name
    try:
        tree = tensorfile.load(path)
    except tensorfile.TensorFileError as error:
        raise ModelDirError(str(error)) from None
    if content_sha256(tree) != meta["files"][name]:
        raise ModelDirError(f"{path}: content differs from {META_FILE}'s SHA-256 (altered, or from another model)")
    return tree


def read_enrolled(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The enrolments of ``model_dir``: subject id -> record (empty when none)."""
    path = Path(model_dir) / ENROLLED_FILE
    if not path.is_file():
        return {}
    tree = tensorfile.load(path)
    return dict(tree["subjects"])


def write_enrolled(model_dir: Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Write the enrolments atomically (tensor file first, then its JSON summary)."""
    model_dir = Path(model_dir)
    tensorfile.save(model_dir / ENROLLED_FILE, {"subjects": {k: dict(v) for k, v in records.items()}})
    summary = {sid: {k: v for k, v in r.items() if not isinstance(v, (torch.Tensor, np.ndarray))}
               for sid, r in records.items()}
    atomic_write_bytes(model_dir / ENROLLED_META, json_bytes({"file": ENROLLED_FILE, "subjects": summary}))


__all__ = ["CARRIED", "ENROLLED_FILE", "ENROLLED_META", "FORMAT", "META_FILE", "ModelDirError", "SUBJECTS_FILE",
           "WEIGHTS_FILE", "content_sha256", "file_sha256", "json_bytes", "read_enrolled", "read_meta", "read_tree",
           "write_enrolled",
           "write_model_dir"]
