"""Data-only files for what a run reads back: tensors in safetensors, everything else in JSON.

A saved tree may hold dicts (any scalar keys), lists, tuples, ``str``/``int``/``float``/
``bool``/``None``, torch tensors and numpy arrays. Tensors and arrays go to the
safetensors table under generated keys; the rest becomes a JSON skeleton kept in the file's
metadata together with a format tag and a SHA-256 of the tensor table. Loading never runs
code from the file (no pickle anywhere): a file that is not such a tree, was cut short or
was altered is refused with :class:`TensorFileError` naming it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .persistence import atomic_write_bytes

FORMAT = "fedmpdrm-tree/1"
#: The one metadata key (safetensors writes several keys in no fixed order; one key keeps the
#: bytes of a file a function of its content).
_META_KEY = "fedmpdrm"
_META_FORMAT, _META_TREE, _META_DIGEST = "format", "tree", "sha256"


class TensorFileError(ValueError):
    """A file that is not a readable data-only tree (missing, truncated, altered, foreign)."""


def _encode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = node.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(node, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(node))
        return {"__ndarray__": key}
    if isinstance(node, np.generic):
        return node.item()
    if isinstance(node, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in node]}
    if isinstance(node, list):
        return [_encode(v, tensors) for v in node]
    if isinstance(node, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in node):
            return {k: _encode(v, tensors) for k, v in node.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in node.items()]}
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot store a {type(node).__name__} in a data-only file")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__ndarray__" in node:
        return tensors[node["__ndarray__"]].numpy()
    if "__tuple__" in node:
        return tuple(_decode(v, tensors) for v in node["__tuple__"])
    if "__items__" in node:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in node["__items__"]}
    return {k: _decode(v, tensors) for k, v in node.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dumps(tree: Any) -> bytes:
    """The bytes of a data-only file holding ``tree``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(tree, tensors), allow_nan=True)
    meta = {_META_FORMAT: FORMAT, _META_TREE: skeleton, _META_DIGEST: _digest(tensors)}
    return st_save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def loads(blob: bytes, source: str = "<bytes>") -> Any:
    """The tree of :func:`dumps`; raises :class:`TensorFileError` naming ``source``."""
    try:
        tensors = st_load(blob)
        meta = _metadata(blob)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TensorFileError(f"{source}: not a readable data-only file ({error})") from None
    if meta.get(_META_FORMAT) != FORMAT:
        raise TensorFileError(f"{source}: not a {FORMAT} file (format {meta.get(_META_FORMAT)!r})")
    if meta.get(_META_DIGEST) != _digest(tensors):
        raise TensorFileError(f"{source}: its tensors do not match the recorded SHA-256 (altered or damaged)")
    try:
        return _decode(json.loads(meta[_META_TREE]), tensors)
    except (KeyError, json.JSONDecodeError) as error:
        raise TensorFileError(f"{source}: damaged structure ({error})") from None


def _metadata(blob: bytes) -> dict[str, str]:
    if len(blob) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size].decode("utf-8"))
    raw = (header.get("__metadata__") or {}).get(_META_KEY)
    return json.loads(raw) if raw else {}


def save(path: Path | str, tree: Any) -> None:
    """Write ``tree`` to ``path`` atomically (a reader sees the old file or the new one)."""
    atomic_write_bytes(path, dumps(tree))


def load(path: Path | str) -> Any:
    """Read the tree saved at ``path``; raises :class:`TensorFileError` (or ``FileNotFoundError``)."""
    path = Path(path)
    return loads(path.read_bytes(), str(path))


__all__ = ["FORMAT", "TensorFileError", "dumps", "load", "loads", "save"]
