"""On-disk clip cache, keyed by a video's content and the preprocessing parameters.

Layout (all under ``SITE_DIR/.mpdrm-cache/``)::

    report.json                      the last prepare run's per-video report
    digests.json                     path -> (size, mtime_ns, sha256): saves re-hashing
    <params_key>/params.json         the preprocessing parameters this folder holds
    <params_key>/<sha256>.npy        clips, uint8 (N, C, T, H, W)
    <params_key>/<sha256>.json       what happened: status ok/skipped, frames, reason, ...

``params_key`` is a hash of every parameter that changes the clips (and a format version),
so a parameter change lands in a new folder and nothing stale is ever reused; the file name
is the SHA-256 of the video's bytes, so renaming or moving a video keeps its cache entry and
editing it does not. A file's digest is recomputed whenever its size or mtime changes.
Entries are written atomically (temporary file + ``os.replace``), so concurrent workers and
interrupted runs never leave a half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..persistence import atomic_open, atomic_write_bytes

CACHE_DIR_NAME = ".mpdrm-cache"
CACHE_FORMAT = 1


def cache_root(site_dir: str | os.PathLike) -> Path:
    return Path(site_dir) / CACHE_DIR_NAME


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode(), fsync=False)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, fsync=False) as f:
        np.save(f, array, allow_pickle=False)


class DigestIndex:
    """Remembers each file's digest by (size, mtime_ns) so unchanged files are not re-read."""

    def __init__(self, site_dir: str | os.PathLike):
        self.path = cache_root(site_dir) / "digests.json"
        try:
            with open(self.path, encoding="utf-8") as f:
                self.entries: dict[str, list] = json.load(f)
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def digest(self, rel: str, path: Path) -> str:
        st = path.stat()
        entry = self.entries.get(rel)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        d = file_sha256(path)
        self.entries[rel] = [st.st_size, st.st_mtime_ns, d]
        self.dirty = True
        return d

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.path, self.entries)
            self.dirty = False


class ClipCache:
    """One parameter set's folder of cached videos."""

    def __init__(self, site_dir: str | os.PathLike, params: dict[str, Any]):
        self.key = params_key(params)
        self.dir = cache_root(site_dir) / self.key
        self.params = params

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.dir / "params.json"
        if not p.exists():
            atomic_write_json(p, {"format": CACHE_FORMAT, **self.params})

    def clips_path(self, digest: str) -> Path:
        return self.dir / f"{digest}.npy"

    def meta_path(self, digest: str) -> Path:
        return self.dir / f"{digest}.json"

    def get(self, digest: str) -> dict | None:
        """The cached outcome for a video (None when absent or incomplete)."""
        try:
            with open(self.meta_path(digest), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        if meta.get("status") == "ok" and not self.clips_path(digest).exists():
            return None
        return meta

    def put(self, digest: str, meta: dict, clips: np.ndarray | None) -> None:
        self.ensure()
        if clips is not None:
            atomic_save_npy(self.clips_path(digest), clips)
        atomic_write_json(self.meta_path(digest), meta)  # written last: marks completion

    def load_clips(self, digest: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.clips_path(digest), mmap_mode="r" if mmap else None)
