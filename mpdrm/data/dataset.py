"""Torch datasets over the clip cache, and ``load_site`` (prepare + split + datasets).

Each item is a dict (the batch contract of docs/interfaces.md; the default collate stacks it):

- ``clips``   float32 ``(C, T, H, W)``, pixel values scaled to [0, 1] (uint8 / 255; no
  per-site standardisation - camera differences between sites are part of the problem);
- ``target``  float32 ``score / score_max`` (regression) or int64 class (classification);
- ``subject`` int64: the site-local subject index. Training subjects are numbered
  ``0 .. num_subjects-1`` in sorted-id order (the personality prototypes are indexed by
  these); test subjects continue after them, ``num_subjects ..`` in sorted-id order, so an
  index never names two people, but only training indices have prototypes;
- ``visit``   int64: the manifest's visit number;
- ``video``   int64: the video's index in the site (manifest order of usable videos, shared
  by train and test), for video-level metrics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .manifest import site_info
from .prepare import PrepareConfig, PrepareResult, prepare_site
from .splits import kfold_subjects, split_from_column, subject_split


class ClipDataset(Dataset):
    """Clips of a set of videos, read (memory-mapped) from the cache on demand."""

    def __init__(self, videos: list[dict[str, Any]], *, task: str = "regression",
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.videos = videos
        self.task = task
        self.transform = transform
        vid, off = [], []
        for k, v in enumerate(videos):
            vid.extend([k] * v["clips"])
            off.extend(range(v["clips"]))
        self._clip_video = np.asarray(vid, np.int64)
        self._clip_offset = np.asarray(off, np.int64)
        per = lambda key: np.asarray([videos[k][key] for k in vid], np.int64)  # noqa: E731
        self.subjects = per("subject_index") if videos else np.zeros(0, np.int64)
        self.visits = per("visit") if videos else np.zeros(0, np.int64)
        self.video_ids = per("video_index") if videos else np.zeros(0, np.int64)
        if task == "classification":
            self.targets = per("label") if videos else np.zeros(0, np.int64)
        else:
            self.targets = (np.asarray([videos[k]["target"] for k in vid], np.float32)
                            if videos else np.zeros(0, np.float32))
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._clip_video)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def _array(self, k: int) -> np.ndarray:
        arr = self._arrays.get(k)
        if arr is None:
            arr = np.load(self.videos[k]["clips_path"], mmap_mode="r")
            self._arrays[k] = arr
        return arr

    def clip(self, i: int) -> np.ndarray:
        """The raw uint8 (C, T, H, W) clip."""
        return np.asarray(self._array(int(self._clip_video[i]))[int(self._clip_offset[i])])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        x = torch.from_numpy(self.clip(i).astype(np.float32) * np.float32(1 / 255))
        if self.transform is not None:
            x = self.transform(x)
        if self.task == "classification":
            target = torch.tensor(int(self.targets[i]), dtype=torch.int64)
        else:
            target = torch.tensor(float(self.targets[i]), dtype=torch.float32)
        return {"clips": x, "target": target,
                "subject": torch.tensor(int(self.subjects[i]), dtype=torch.int64),
                "visit": torch.tensor(int(self.visits[i]), dtype=torch.int64),
                "video": torch.tensor(int(self.video_ids[i]), dtype=torch.int64)}

    @property
    def num_videos(self) -> int:
        return len(self.videos)


@dataclass
class SiteData:
    name: str
    train: ClipDataset
    test: ClipDataset
    num_subjects: int                 # training subjects (prototype count)
    score_max: float
    task: str = "regression"
    num_classes: int = 2
    subject_ids: list[str] = field(default_factory=list)       # index i -> id (train)
    test_subject_ids: list[str] = field(default_factory=list)  # index num_subjects+j -> id
    videos: list[dict[str, Any]] = field(default_factory=list) # every usable video
    site_dir: Path | None = None
    prepare: PrepareResult | None = None


def _label_threshold(site_dir: Path, score_max: float, given: float | None) -> float:
    if given is not None:
        return float(given)
    t = site_info(site_dir).get("label_threshold")
    if t is not None:
        return float(t)
    return round(score_max * 10 / 27)


def load_site(site_dir: str | os.PathLike, prepare_cfg: PrepareConfig | None = None, *,
              test_fraction: float = 0.25, seed: int = 0, score_max: float | None = None,
              task: str = "regression", workers: int = 1, progress: bool = False,
              folds: int | None = None, fold: int | None = None,
              label_threshold: float | None = None, use_split_column: bool = True,
              transform: Callable | None = None) -> SiteData:
    """Prepare (cache-backed, so cheap after the first time) and split one site.

    The split is subject-disjoint: the manifest's ``split`` column when every usable row has
    one (and ``use_split_column``), else ``subject_split(test_fraction, seed)``; with
    ``folds=k, fold=i`` the i-th of k seeded folds is the test set. Classification targets
    come from the ``label`` column, or ``score >= label_threshold`` (default: the site's or
    cohort's ``label_threshold``, else ``round(score_max * 10 / 27)``, PHQ-9's "moderate").
    Raises RuntimeError when no usable video remains (details in the prepare report)."""
    if task not in ("regression", "classification"):
        raise ValueError("task must be 'regression' or 'classification'")
    site_dir = Path(site_dir)
    prep = prepare_site(site_dir, prepare_cfg, workers=workers, progress=progress,
                        score_max=score_max)
    smax = prep.score_max
    ok = prep.ok
    if not ok:
        raise RuntimeError(f"site {site_dir.name}: no usable video (see {prep.report_path})")

    class _R:  # minimal row view for split_from_column
        def __init__(self, e):
            self.subject, self.split = e["subject"], e.get("split")
    subjects = sorted({e["subject"] for e in ok})
    if folds is not None:
        if fold is None:
            raise ValueError("give fold together with folds")
        train_s, test_s = kfold_subjects(subjects, folds, seed)[fold]
    else:
        fixed = split_from_column([_R(e) for e in ok]) if use_split_column else None
        train_s, test_s = fixed if fixed is not None else subject_split(subjects, test_fraction,
                                                                       seed)
    index = {s: i for i, s in enumerate(train_s)}
    index.update({s: len(train_s) + j for j, s in enumerate(test_s)})

    train_set = set(train_s)
    threshold = _label_threshold(site_dir, smax, label_threshold)
    videos = []
    for k, e in enumerate(ok):
        label = e.get("label")
        if label is None:
            label = int(e["score"] >= threshold)
        videos.append({"video_index": k, "video": e["video"], "subject": e["subject"],
                       "subject_index": index[e["subject"]], "visit": int(e["visit"]),
                       "score": float(e["score"]), "target": float(e["score"]) / smax,
                       "label": int(label), "clips": int(e["clips"]),
                       "clips_path": str(prep.clips_path(e)),
                       "split": "train" if e["subject"] in train_set else "test"})
    num_classes = max(2, max(v["label"] for v in videos) + 1)
    train = ClipDataset([v for v in videos if v["split"] == "train"], task=task,
                        transform=transform)
    test = ClipDataset([v for v in videos if v["split"] == "test"], task=task,
                       transform=transform)
    return SiteData(name=site_dir.name, train=train, test=test, num_subjects=len(train_s),
                    score_max=smax, task=task, num_classes=num_classes,
                    subject_ids=list(train_s), test_subject_ids=list(test_s), videos=videos,
                    site_dir=site_dir, prepare=prep)
