"""On-disk clip cache, keyed by a video's content and the preprocessing parameters.

Layout (all under ``SITE_DIR/.mpdrm-cache/``)::

    report.json                      the last prepare run's per-video report
    digests.json                     path -> (size, mtime_ns, sha256): saves re-hashing
    <params_key>/params.json         the preprocessing parameters this folder holds
    <params_key>/index.json          what ``load_site`` reads: every manifest row's outcome
                                     and the (size, mtime_ns) of each file it came from
    <params_key>/<sha256>.npy        clips, uint8 (N, C, T, H, W)
    <params_key>/<sha256>.json       what happened: status ok/skipped, frames, reason, ...

``params_key`` is a hash of every parameter that changes the clips (and a format version),
so a parameter change lands in a new folder and nothing stale is ever reused; the file name
is the SHA-256 of the video's bytes, so renaming or moving a video keeps its cache entry and
editing it does not. A file's digest is recomputed whenever its size or mtime changes.
Entries are written atomically (temporary file + ``os.replace``), so concurrent workers and
interrupted runs never leave a half-written entry.

The index is written last by each ``prepare_site`` run. Loading a site reads it, compares the
recorded file fingerprints with a ``stat`` of each file (no video is read or hashed) and
memory-maps the clip arrays; anything missing, stale or damaged is a :class:`CacheError`.
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
INDEX_NAME = "index.json"
INDEX_FORMAT = 1


class CacheError(RuntimeError):
    """A site's prepared data is missing, out of date or damaged."""


class NotPreparedError(CacheError):
    """A site was not prepared with the asked parameters, or changed since."""


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
        """The cached outcome for a video (None when absent, incomplete or damaged)."""
        try:
            with open(self.meta_path(digest), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        if meta.get("status") == "ok":
            try:
                open_clips(self.clips_path(digest), meta.get("clips"))
            except CacheError:
                return None
        return meta

    def put(self, digest: str, meta: dict, clips: np.ndarray | None) -> None:
        self.ensure()
        if clips is not None:
            atomic_save_npy(self.clips_path(digest), clips)
        atomic_write_json(self.meta_path(digest), meta)  # written last: marks completion

    def load_clips(self, digest: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.clips_path(digest), mmap_mode="r" if mmap else None)


# ----------------------------------------------------------------------------- loading

def open_clips(path: Path, clips: int | None = None) -> np.ndarray:
    """Memory-map a cached clip array, checking it is whole.

    Parameters
    ----------
    path : Path
        The ``.npy`` file.
    clips : int, optional
        The number of clips the index promises (first dimension).

    Raises
    ------
    CacheError
        Naming ``path``: missing, unreadable, truncated or not ``(N, C, T, H, W)`` uint8.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CacheError(f"{path}: clip cache file is missing") from None
    except (OSError, ValueError, EOFError) as e:
        raise CacheError(f"{path}: clip cache file is damaged or truncated ({e})") from None
    if not isinstance(arr, np.memmap) or arr.ndim != 5 or arr.dtype != np.uint8:
        raise CacheError(f"{path}: not a uint8 (N, C, T, H, W) clip array")
    size = path.stat().st_size
    if size != arr.offset + arr.nbytes:
        raise CacheError(f"{path}: clip cache file is truncated or padded ({size} bytes, "
                         f"expected {arr.offset + arr.nbytes})")
    if clips is not None and arr.shape[0] != clips:
        raise CacheError(f"{path}: holds {arr.shape[0]} clips, the index says {clips}")
    return arr


def fingerprint(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, ``None`` when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def index_path(site_dir: str | os.PathLike, key: str) -> Path:
    return cache_root(site_dir) / key / INDEX_NAME


def write_index(site_dir: str | os.PathLike, key: str, params: dict[str, Any], *,
                score_max: float, entries: list[dict[str, Any]],
                files: dict[str, list[int] | None]) -> Path:
    """Record one preparation: its parameters, every row's outcome, the source files'
    fingerprints (paths relative to the site folder)."""
    path = index_path(site_dir, key)
    atomic_write_json(path, {"format": INDEX_FORMAT, "params_key": key, "params": params,
                             "score_max": score_max, "files": files, "entries": entries})
    return path


def prepared_params(site_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The parameter sets a site has an index for (for error messages)."""
    out = []
    for p in sorted(cache_root(site_dir).glob(f"*/{INDEX_NAME}")):
        try:
            out.append(json.loads((p.parent / "params.json").read_text()))
        except (OSError, ValueError):
            continue
    return out


def read_index(site_dir: str | os.PathLike, key: str) -> dict[str, Any] | None:
    """A site's index for parameter key ``key`` (None when it was never prepared so).

    Raises
    ------
    CacheError
        The index exists but cannot be read (names the file).
    """
    path = index_path(site_dir, key)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable cache index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise CacheError(f"{path}: cache index of an unknown format")
    return index


def changed_files(site_dir: str | os.PathLike, files: dict[str, list[int] | None]) -> list[str]:
    """The recorded files whose size or mtime differ now (by ``stat`` alone)."""
    site_dir = Path(site_dir)
    return [rel for rel, fp in files.items() if fingerprint(site_dir / rel) != fp]
