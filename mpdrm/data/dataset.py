"""Torch datasets over the clip cache, and ``load_site`` (prepared data -> split -> datasets).

``load_site`` never prepares: it reads the index ``prepare_site`` (``mpdrm-data prepare``)
wrote for these preprocessing parameters and memory-maps the cached clips, so loading a site
in a fresh process costs a few small reads and one ``stat`` per video.

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

import dataclasses
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import (CacheError, NotPreparedError, cache_root, changed_files, open_clips,
                    params_key, prepared_params, read_index)
from .manifest import resolve_score_max, site_info
from .prepare import PrepareConfig, PrepareResult
from .splits import REFERENCE, TEST, TRAIN, kfold_subjects, protocol_split, split_from_column, subject_split


class ClipDataset(Dataset):
    """Clips of a set of videos, read (memory-mapped) from the cache on demand."""

    def __init__(self, videos: list[dict[str, Any]], *, task: str = "regression",
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 arrays: Sequence[np.ndarray] | None = None):
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
        self._arrays: dict[int, np.ndarray] = dict(enumerate(arrays)) if arrays else {}

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
    protocol: str = "subjects"        # evaluation protocol (mpdrm.data.splits.PROTOCOLS)
    # clips that define each scored subject's personality reference: its training visits
    # (protocol visits), its enrolment visit (enrolled); None when the person is unknown
    reference: ClipDataset | None = None
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


#: PrepareConfig fields that ``mpdrm-data prepare`` sets with an option.
_CLI_OPTIONS = {"detector": "--detector", "fps": "--fps", "frames": "--frames",
                "stride": "--stride", "hop": "--hop", "size": "--size", "margin": "--margin",
                "detect_every": "--detect-every", "fill": "--fill", "max_clips": "--max-clips",
                "min_face_rate": "--min-face-rate"}


def prepare_command(site_dir: str | os.PathLike, cfg: PrepareConfig | None = None,
                    score_max: float | None = None) -> str:
    """The ``mpdrm-data prepare`` command line that prepares ``site_dir`` with ``cfg``.

    Parameters
    ----------
    site_dir : path
        The site folder.
    cfg : PrepareConfig, optional
        The preprocessing parameters (default: the defaults, which need no option).
    score_max : float, optional
        The scale maximum the rows are validated against (``--score-max``).
    """
    cfg, default = cfg or PrepareConfig(), PrepareConfig()
    parts = ["mpdrm-data", "prepare", shlex.quote(str(site_dir))]
    for name, option in _CLI_OPTIONS.items():
        value = getattr(cfg, name)
        if value != getattr(default, name):
            parts += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    if not cfg.grayscale:
        parts.append("--rgb")
    if score_max is not None:
        parts += ["--score-max", f"{score_max:g}"]
    return " ".join(parts)


def _how_to_prepare(site_dir: Path, cfg: PrepareConfig, score_max: float | None) -> str:
    """``Run `mpdrm-data prepare ...``` and the fields that command cannot set, if any."""
    default = PrepareConfig()
    if score_max is not None and float(score_max) == resolve_score_max(site_dir):
        score_max = None                     # the site's own scale: no option needed
    rest = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
            if f.name not in _CLI_OPTIONS and f.name not in ("grayscale", "memory_budget_mb")
            and getattr(cfg, f.name) != getattr(default, f.name)]
    how = f"Run `{prepare_command(site_dir, cfg, score_max)}`"
    if rest:
        how += (f" (set {', '.join(rest)} with prepare_site(SITE_DIR, PrepareConfig(...)): "
                f"mpdrm-data has no option for them)")
    return how


def _params_diff(asked: dict[str, Any], had: dict[str, Any]) -> str:
    keys = sorted((set(asked) | set(had)) - {"format"})
    return ", ".join(f"{k}={had.get(k)!r} (asked {asked.get(k)!r})" for k in keys
                     if asked.get(k) != had.get(k))


def _not_prepared(site_dir: Path, params: dict[str, Any], how: str) -> NotPreparedError:
    found = [_params_diff(params, had) for had in prepared_params(site_dir)]
    why = ("it was prepared with other parameters: " + "; ".join(found) if found
           else "no preparation found")
    return NotPreparedError(f"site {site_dir} is not prepared with these preprocessing "
                            f"parameters ({why}). {how} first.")


def _read_prepared(site_dir: Path, cfg: PrepareConfig,
                   score_max: float | None) -> tuple[PrepareResult, str]:
    """The preparation of ``site_dir`` with ``cfg``, checked to be current by ``stat``
    alone, and how to (re)prepare it."""
    resolved = cfg.resolve(site_dir)
    params = resolved.cache_params()
    key = params_key(params)
    index = read_index(site_dir, key)
    how = _how_to_prepare(site_dir, cfg, score_max)
    if index is None:
        raise _not_prepared(site_dir, params, how)
    if score_max is not None and float(score_max) != float(index["score_max"]):
        raise NotPreparedError(f"site {site_dir} was prepared with score_max "
                               f"{index['score_max']:g}, not {float(score_max):g}. "
                               f"{how} first.")
    changed = changed_files(site_dir, index["files"])
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise NotPreparedError(f"site {site_dir} changed since it was prepared "
                               f"({', '.join(changed[:3])}{more}). {how} again.")
    prep = PrepareResult(site_dir, resolved, key, index["entries"],
                         report_path=cache_root(site_dir) / "report.json",
                         score_max=float(index["score_max"]))
    return prep, how


def _open_arrays(prep: PrepareResult, how: str) -> list[np.ndarray]:
    """Memory-map every usable video's clips (a damaged file is named)."""
    try:
        return [open_clips(prep.clips_path(e), int(e["clips"])) for e in prep.ok]
    except CacheError as e:
        raise CacheError(f"{e}. {how} to rebuild it.") from None


def load_site(site_dir: str | os.PathLike, prepare_cfg: PrepareConfig | None = None, *,
              test_fraction: float = 0.25, seed: int = 0, score_max: float | None = None,
              task: str = "regression", folds: int | None = None, fold: int | None = None,
              label_threshold: float | None = None, use_split_column: bool = True,
              transform: Callable | None = None, protocol: str = "subjects") -> SiteData:
    """Split one prepared site and serve its cached clips (never prepares).

    The site must have been prepared with ``prepare_cfg`` (``mpdrm-data prepare SITE_DIR``
    with the same options, or ``prepare_site``); loading reads that preparation's index,
    ``stat``s the manifest and each video, and memory-maps the clip arrays.

    The subject split is the manifest's ``split`` column when every usable row has one (and
    ``use_split_column``), else ``subject_split(test_fraction, seed)``; with ``folds=k,
    fold=i`` the i-th of k seeded folds is the test set. ``protocol`` (``subjects`` |
    ``visits`` | ``enrolled``, :func:`mpdrm.data.splits.protocol_split`) then decides which
    visits train, which are scored and which are a scored subject's personality reference. Classification targets
    come from the ``label`` column, or ``score >= label_threshold`` (default: the site's or
    cohort's ``label_threshold``, else ``round(score_max * 10 / 27)``, PHQ-9's "moderate").

    Raises
    ------
    NotPreparedError
        Not prepared with these parameters (or ``score_max``), or the manifest or a video
        changed since; the message names the folder and the command to run.
    CacheError
        A cached clip file is missing or truncated (the message names it).
    RuntimeError
        No usable video remains (details in the prepare report).
    """
    if task not in ("regression", "classification"):
        raise ValueError("task must be 'regression' or 'classification'")
    site_dir = Path(site_dir)
    prep, how = _read_prepared(site_dir, prepare_cfg or PrepareConfig(), score_max)
    smax = prep.score_max
    ok = prep.ok
    if not ok:
        raise RuntimeError(f"site {site_dir.name}: no usable video (see {prep.report_path})")
    arrays = _open_arrays(prep, how)

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
    split = protocol_split([(e["subject"], int(e["visit"])) for e in ok], protocol,
                           subject_split_=(train_s, test_s))
    train_s, test_s = split.train_subjects, split.other_subjects
    index = {s: i for i, s in enumerate(train_s)}
    index.update({s: len(train_s) + j for j, s in enumerate(test_s)})

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
                       "split": split.roles[(e["subject"], int(e["visit"]))]})
    num_classes = max(2, max(v["label"] for v in videos) + 1)
    parts = {p: [k for k, v in enumerate(videos) if v["split"] == p] for p in (TRAIN, TEST, REFERENCE)}
    train, test, enrol = (ClipDataset([videos[k] for k in parts[p]], task=task, transform=transform,
                                      arrays=[arrays[k] for k in parts[p]]) for p in (TRAIN, TEST, REFERENCE))
    reference = {"subjects": None, "visits": train, "enrolled": enrol}[protocol]
    return SiteData(name=site_dir.name, train=train, test=test, num_subjects=len(train_s),
                    score_max=smax, task=task, num_classes=num_classes,
                    subject_ids=list(train_s), test_subject_ids=list(test_s), videos=videos,
                    site_dir=site_dir, prepare=prep, protocol=protocol, reference=reference)
