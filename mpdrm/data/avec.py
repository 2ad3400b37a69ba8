"""Adapter: the AVEC2013 / AVEC2014 depression-challenge folder layout -> a site folder.

The challenge data come as video files named ``<subject>_<visit>_<rest>.<ext>`` (e.g.
``203_1_Freeform_video.mp4``, ``203_1_cut_video.mp4``) under partition folders
(``Training``, ``Development``, ``Testing``), and one label file per recording named
``<subject>_<visit>_Depression.csv`` (any ``<subject>_<visit>_*.csv``) holding the BDI-II
score. Folder names differ between releases, so the adapter searches the whole tree and
matches videos to labels by ``(subject, visit)``; AVEC2014 has two tasks (Freeform,
Northwind) per visit, both get the visit's score.

Output: ``OUT/manifest.csv`` (video, subject, visit, score, task, partition [, split]),
``OUT/videos/`` (symlinks by default, or copies / hard links) and ``OUT/site.json`` with the
BDI-II scale (``score_max`` 63, ``label_threshold`` 14 = "at least mild" depression).
Videos without a label and labels without a video are reported, not guessed.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_write_bytes, atomic_write_json
from .video import VIDEO_EXTENSIONS

NAME_RE = re.compile(r"^(?P<subject>\d+)_(?P<visit>\d+)(?:_(?P<rest>.*))?$")
NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")
PARTITIONS = {"training": "Training", "train": "Training", "development": "Development",
              "dev": "Development", "testing": "Testing", "test": "Testing"}
BDI_MAX = 63
BDI_THRESHOLD = 14


@dataclass
class AvecResult:
    site_dir: Path
    videos: int = 0
    subjects: int = 0
    unlabelled: list[str] = field(default_factory=list)      # videos without a label file
    orphan_labels: list[str] = field(default_factory=list)   # labels without a video
    conflicts: list[str] = field(default_factory=list)       # (subject, visit) with 2 scores


def _partition(path: Path, root: Path) -> str:
    for part in path.relative_to(root).parts[:-1]:
        p = PARTITIONS.get(part.lower())
        if p:
            return p
    return ""


def _task(rest: str | None) -> str:
    rest = (rest or "").replace("_video", "").replace("video", "").strip("_")
    return rest or "video"


def read_label(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return None
    m = NUMBER_RE.search(text)
    return float(m.group()) if m else None


_Key = tuple[str, int]                   # (subject, visit)
_Video = tuple[Path, str, int, str]      # (path, subject, visit, task)


def _scan(root: Path) -> tuple[list[_Video], list[tuple[Path, _Key]]]:
    """Every file under ``root`` (sorted) named ``<subject>_<visit>[_<rest>]``: the videos
    (by extension) and the CSV files with their ``(subject, visit)``."""
    videos: list[_Video] = []
    csvs: list[tuple[Path, _Key]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        m = NAME_RE.match(path.stem)
        if not m:
            continue
        key = (m["subject"], int(m["visit"]))
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append((path, key[0], key[1], _task(m["rest"])))
        elif path.suffix.lower() == ".csv":
            csvs.append((path, key))
    return videos, csvs


def _read_labels(csvs: list[tuple[Path, _Key]], res: AvecResult
                 ) -> tuple[dict[_Key, tuple[float, Path]], set[_Key]]:
    """The score of each ``(subject, visit)`` and the file it came from, plus the keys whose
    label files disagree (reported in ``res.conflicts``, left out of the labels' use).

    Only the ``*_Depression.csv`` files count when there are any (other CSVs may be
    features); files holding no number are ignored.
    """
    if any("depress" in p.stem.lower() for p, _ in csvs):
        csvs = [(p, k) for p, k in csvs if "depress" in p.stem.lower()]
    labels: dict[_Key, tuple[float, Path]] = {}
    conflicted: set[_Key] = set()
    for path, key in csvs:
        value = read_label(path)
        if value is None:
            continue
        if key in labels and labels[key][0] != value:
            res.conflicts.append(f"{key[0]}_{key[1]}: {labels[key][1].name} says "
                                 f"{labels[key][0]:g}, {path.name} says {value:g}")
            conflicted.add(key)
            continue
        labels[key] = (value, path)
    return labels, conflicted


def _place(path: Path, dest: Path, mode: str) -> None:
    """Put ``path`` at ``dest`` (replacing what is there) as a symlink, hard link or copy."""
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if mode == "symlink":
        dest.symlink_to(path)
    elif mode == "hardlink":
        os.link(path, dest)
    else:
        shutil.copy2(path, dest)


def _place_videos(videos: list[_Video], labels: dict[_Key, tuple[float, Path]],
                  conflicted: set[_Key], root: Path, out_dir: Path, mode: str,
                  split_from_partition: bool, res: AvecResult) -> tuple[list[list], set[_Key]]:
    """Place every labelled video under ``out_dir/videos`` and return the manifest rows and
    the labels used. Unlabelled (or conflicted) videos go to ``res.unlabelled``; a file name
    seen before is prefixed with its partition."""
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    used_names: set[str] = set()
    used_keys: set[_Key] = set()
    for path, subject, visit, task in videos:
        key = (subject, visit)
        if key not in labels or key in conflicted:
            res.unlabelled.append(str(path.relative_to(root)))
            continue
        used_keys.add(key)
        part = _partition(path, root)
        name = path.name if path.name not in used_names else f"{part}_{path.name}"
        used_names.add(name)
        _place(path, out_dir / "videos" / name, mode)
        row = [f"videos/{name}", subject, visit, f"{labels[key][0]:g}", task, part]
        if split_from_partition:
            row.append("test" if part == "Testing" else "train")
        rows.append(row)
    return rows, used_keys


def _write_site(out_dir: Path, rows: list[list], split_from_partition: bool) -> None:
    """Write ``manifest.csv`` and the BDI-II ``site.json``."""
    header = ["video", "subject", "visit", "score", "task", "partition"]
    if split_from_partition:
        header.append("split")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(out_dir / "manifest.csv", buf.getvalue().encode())
    atomic_write_json(out_dir / "site.json", {"scale": "BDI-II", "score_max": BDI_MAX,
                                              "label_threshold": BDI_THRESHOLD,
                                              "source": "AVEC2013/2014", "face_crops": False})


def convert_avec(root: str | os.PathLike, out_dir: str | os.PathLike, *,
                 mode: str = "symlink", split_from_partition: bool = False) -> AvecResult:
    """Build a site folder at ``out_dir`` from an AVEC2013/2014 tree at ``root``.
    ``mode``: ``symlink`` | ``hardlink`` | ``copy``. ``split_from_partition``: write a
    ``split`` column (Training/Development -> train, Testing -> test)."""
    if mode not in ("symlink", "hardlink", "copy"):
        raise ValueError("mode must be symlink, hardlink or copy")
    root, out_dir = Path(root).resolve(), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    res = AvecResult(out_dir)
    videos, csvs = _scan(root)
    labels, conflicted = _read_labels(csvs, res)
    rows, used_keys = _place_videos(videos, labels, conflicted, root, out_dir, mode,
                                    split_from_partition, res)
    res.orphan_labels = sorted(f"{s}_{v}" for (s, v) in labels if (s, v) not in used_keys)
    _write_site(out_dir, rows, split_from_partition)
    res.videos = len(rows)
    res.subjects = len({r[1] for r in rows})
    return res
