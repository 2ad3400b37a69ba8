"""``prepare_site``: decode every video of a site, find the face, cut clips, cache them.

Per video: decode with OpenCV and resample to ``cfg.fps`` -> face crop (Haar track, or the
centred square for ``detector="none"``) -> ``size`` x ``size``, grayscale or RGB -> clips of
``frames`` frames, every ``stride``-th frame of a window, windows ``hop`` frames apart ->
uint8 ``(N, C, T, H, W)`` in the cache. Bad videos are skipped with a reason, never dropped
silently; ``SITE_DIR/.mpdrm-cache/report.json`` lists every manifest row's outcome.

``detector="auto"`` (the default) means ``none`` when the site declares its videos to be face
crops (``site.json`` ``{"face_crops": true}``, which the synthetic cohort writes) and
``haar`` otherwise.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .cache import ClipCache, DigestIndex, atomic_write_json, cache_root, fingerprint, write_index
from .clips import clip_starts, cut_clips, window_length
from .face import (FILLS, HaarDetector, centre_square, continues_track, crop_square, pick_box,
                   smooth_track)
from .face_start import StartWindow
from .manifest import Manifest, Row, read_manifest, site_info
from .video import DecodeStats, VideoError, iter_frames

DETECTORS = ("auto", "haar", "none")
#: Files besides the videos whose change makes a preparation stale (relative to SITE_DIR).
SITE_FILES = ("manifest.csv", "site.json", "../cohort.json")


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing parameters. Every field except ``memory_budget_mb`` is part of the
    cache key."""

    frames: int = 16            # T, frames per clip
    stride: int = 2             # temporal stride inside a clip's window
    hop: int = 8                # frames between the starts of consecutive windows
    size: int = 64              # output side in pixels (square)
    fps: float = 15.0           # decode-time resampling rate
    grayscale: bool = True      # 1 channel; False -> 3 channels RGB
    detector: str = "auto"      # "auto" | "haar" | "none"
    margin: float = 0.25        # crop side = face side * (1 + 2 * margin)
    detect_every: int = 4       # run the Haar cascade on every n-th frame (fill between)
    fill: str = "linear"        # boxes between detections: "linear" | "carry" (face.FILLS)
    detect_max_side: int = 480  # frames are scaled down to this for detection
    max_face_speed: float = 4.0 # face sides/s a tracked face can move (further: not the face)
    start_seconds: float = 1.0  # several faces at the start: choose the live one over this long
    min_face_rate: float = 0.1  # skip a video whose frames show a face less often than this
    median_window: int = 5      # box smoothing, frames (see mpdrm.data.face)
    smooth_window: int = 7
    max_clips: int | None = None  # per video, spread evenly; None = all windows
    memory_budget_mb: int = 512   # Haar path: decode twice instead of holding more frames

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, not {self.detector!r}")
        for name in ("frames", "stride", "hop", "size", "detect_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.max_face_speed <= 0:
            raise ValueError("max_face_speed must be > 0")
        if self.start_seconds < 0:
            raise ValueError("start_seconds must be >= 0 (0: start on the largest box)")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, not {self.fill!r}")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def window(self) -> int:
        """Frames (at ``fps``) one clip spans."""
        return window_length(self.frames, self.stride)

    @property
    def window_seconds(self) -> float:
        return self.window / self.fps

    def resolve(self, site_dir: str | os.PathLike) -> "PrepareConfig":
        """Replace ``detector="auto"`` by the concrete detector for this site."""
        if self.detector != "auto":
            return self
        det = "none" if site_info(site_dir).get("face_crops") else "haar"
        return dataclasses.replace(self, detector=det)

    def cache_params(self) -> dict[str, Any]:
        if self.detector == "auto":
            raise ValueError("resolve() the config for a site before keying the cache")
        d = dataclasses.asdict(self)
        d.pop("memory_budget_mb")
        if self.detector == "none":   # Haar settings do not change the output
            for k in ("margin", "detect_every", "fill", "detect_max_side", "max_face_speed",
                      "start_seconds", "min_face_rate", "median_window", "smooth_window"):
                d.pop(k)
        return d


@dataclass
class VideoOutcome:
    meta: dict[str, Any]
    clips: np.ndarray | None = None
    track: np.ndarray | None = None      # (F, 3) smoothed (cx, cy, side), Haar path only
    detected: np.ndarray | None = None   # (F,) bool: raw detection on that frame


def _finish_frame(crop: np.ndarray, grayscale: bool) -> np.ndarray:
    if grayscale:
        return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[:, :, None]
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def _centre_crops(path: str | os.PathLike, cfg: PrepareConfig, stats: DecodeStats,
                  meta: dict[str, Any]) -> list[np.ndarray]:
    """``detector="none"``: the frame is the face crop; take its centred square.
    ``meta["face_rate"]`` is None (nothing was detected)."""
    meta["face_rate"] = None
    return [_finish_frame(centre_square(frame, cfg.size), cfg.grayscale)
            for frame in iter_frames(path, cfg.fps, stats)]


@dataclass
class _FaceScan:
    """One decoding pass of the Haar path: the raw box per frame (None when not checked
    or nothing found), whether each frame had a detection, how many frames were checked,
    and the decoded frames when they fit the memory budget (None: decode again)."""

    raw: list[np.ndarray | None]
    detected: list[bool]
    checked: int
    kept: list[np.ndarray] | None


def _scan_faces(path: str | os.PathLike, cfg: PrepareConfig, stats: DecodeStats) -> _FaceScan:
    """Run the Haar cascade on every ``detect_every``-th frame, searching near a box found
    in the last second first (ROI tracking; the whole frame too once the last box is half a
    second old) and refusing a box the tracked face could not have jumped to
    (:func:`~mpdrm.data.face.continues_track`); when the first search finds several boxes,
    choose between them over ``start_seconds`` (:mod:`mpdrm.data.face_start`). Keep the
    frames while they fit ``memory_budget_mb``."""
    det = HaarDetector(detect_max_side=cfg.detect_max_side)
    scan = _FaceScan(raw=[], detected=[], checked=0, kept=[])
    budget = cfg.memory_budget_mb * 1e6
    held = 0
    prev, prev_i = None, -10**9
    start: StartWindow | None = None
    for i, frame in enumerate(iter_frames(path, cfg.fps, stats)):
        box = None
        if i % cfg.detect_every == 0:
            scan.checked += 1
            if start is not None:
                start.add(i, frame, det.detect(frame))
            else:
                near = prev if i - prev_i <= cfg.fps else None
                whole_frame = i - prev_i > cfg.fps / 2       # a lone miss: wait for the next
                boxes = det.detect(frame, near=near, fallback=whole_frame)
                if prev is None and len(boxes) > 1 and cfg.start_seconds > 0:
                    start = StartWindow(i, round(cfg.start_seconds * cfg.fps), cfg.fps,
                                        cfg.max_face_speed)
                    start.add(i, frame, boxes)
                else:
                    box = _next_box(boxes, prev, near, (i - prev_i) / cfg.fps, cfg)
            if box is not None:
                prev, prev_i = box, i
        scan.raw.append(box)
        scan.detected.append(box is not None)
        if start is not None and start.over(i):
            prev, prev_i = _settle_start(start, scan, prev, prev_i)
            start = None
        if scan.kept is not None:
            held += frame.nbytes
            scan.kept.append(frame)
            if held > budget:
                scan.kept = None          # too long to hold: decode again later
    if start is not None:
        _settle_start(start, scan, prev, prev_i)
    return scan


def _next_box(boxes: np.ndarray, prev: np.ndarray | None, near: np.ndarray | None,
              seconds_apart: float, cfg: PrepareConfig) -> np.ndarray | None:
    """The box of this search that continues the track (None: none does)."""
    box = pick_box(boxes, prev)
    if box is not None and near is not None and not continues_track(
            box, near, seconds_apart, cfg.max_face_speed):
        return None
    return box


def _settle_start(start: StartWindow, scan: _FaceScan, prev: np.ndarray | None,
                  prev_i: int) -> tuple[np.ndarray | None, int]:
    """Write the chosen start tracklet into ``scan``; return the track's newest box and
    its frame (unchanged when the window found nothing)."""
    chosen = start.choose()
    for j, b in chosen.items():
        scan.raw[j] = b
        scan.detected[j] = True
    if not chosen:
        return prev, prev_i
    last = max(chosen)
    return chosen[last], last


def _check_faces(frames: int, n_det: int, checked: int, cfg: PrepareConfig) -> None:
    """Raise :class:`VideoError` when no frame decoded, no face was found, or faces were
    found on fewer than ``min_face_rate`` of the checked frames."""
    if frames == 0:
        raise VideoError("not_video", "not a readable video (no frame can be decoded)")
    if n_det == 0:
        raise VideoError("no_face", f"no face detected in any of {checked} checked "
                                    f"frames (Haar frontal-face cascade)")
    if n_det / max(checked, 1) < cfg.min_face_rate:
        raise VideoError("no_face", f"face detected in only {n_det} of {checked} "
                                    f"frames ({n_det / checked:.0%} < "
                                    f"min_face_rate {cfg.min_face_rate:.0%})")


def _crop_track(path: str | os.PathLike, cfg: PrepareConfig, track: np.ndarray,
                kept: list[np.ndarray] | None) -> list[np.ndarray]:
    """Crop each frame (the kept ones, else decoded again) around its smoothed box, the
    side widened by ``margin`` on each side."""
    crops: list[np.ndarray] = []
    frames_iter = kept if kept is not None else iter_frames(path, cfg.fps, DecodeStats())
    for i, frame in enumerate(frames_iter):
        if i >= len(track):
            break
        cx, cy, side = track[i]
        crop = crop_square(frame, cx, cy, side * (1 + 2 * cfg.margin), cfg.size)
        crops.append(_finish_frame(crop, cfg.grayscale))
    return crops


def _haar_crops(path: str | os.PathLike, cfg: PrepareConfig, stats: DecodeStats,
                out: VideoOutcome) -> list[np.ndarray]:
    """``detector="haar"``: detect, check the face rate (``meta["face_rate"]``), smooth the
    track (``out.detected``, ``out.track``) and crop every frame along it."""
    scan = _scan_faces(path, cfg, stats)
    n_det = int(sum(scan.detected))
    out.meta["face_rate"] = round(n_det / max(scan.checked, 1), 4)
    out.detected = np.asarray(scan.detected, bool)
    _check_faces(len(scan.raw), n_det, scan.checked, cfg)
    track = smooth_track(scan.raw, fill=cfg.fill, median_window=cfg.median_window,
                         smooth_window=cfg.smooth_window)
    out.track = track
    return _crop_track(path, cfg, track, scan.kept)


def _cut(crops: list[np.ndarray], cfg: PrepareConfig, stats: DecodeStats,
         out: VideoOutcome) -> None:
    """Record the decoding facts in ``out.meta`` and cut the clips into ``out.clips``
    (status ``ok``). Raises :class:`VideoError` ``too_short`` when no clip window fits."""
    meta = out.meta
    n = len(crops)
    meta.update(frames=n, source_frames=stats.source_frames,
                source_fps=round(stats.fps_in, 4), fps=cfg.fps,
                fps_assumed=stats.fps_assumed,
                duration_s=round(stats.source_frames / stats.fps_in, 3) if stats.fps_in else 0,
                width=stats.width, height=stats.height)
    starts = clip_starts(n, cfg.frames, cfg.stride, cfg.hop, cfg.max_clips)
    if not starts:
        raise VideoError("too_short",
                         f"video too short: {n} frames at {cfg.fps:g} fps "
                         f"({n / cfg.fps:.2f} s) < one clip window of {cfg.window} frames "
                         f"({cfg.window_seconds:.2f} s)")
    out.clips = cut_clips(np.stack(crops), starts, cfg.frames, cfg.stride)
    meta.update(status="ok", clips=len(starts), clip_starts=starts)


def process_video(path: str | os.PathLike, cfg: PrepareConfig) -> VideoOutcome:
    """Run the pipeline on one file. Never raises for a bad video: the outcome's
    ``meta["status"]`` is ``"ok"`` or ``"skipped"`` with ``meta["reason"]``."""
    if cfg.detector == "auto":
        raise ValueError("resolve() the config before processing")
    t0 = time.perf_counter()
    stats = DecodeStats()
    meta: dict[str, Any] = {"status": "skipped", "detector": cfg.detector}
    out = VideoOutcome(meta)
    try:
        if cfg.detector == "none":
            crops = _centre_crops(path, cfg, stats, meta)
        else:
            crops = _haar_crops(path, cfg, stats, out)
        _cut(crops, cfg, stats, out)
    except VideoError as e:
        meta.update(reason=str(e), kind=e.kind, frames=stats.frames,
                    source_frames=stats.source_frames)
        meta["clips"] = 0
    meta["seconds"] = round(time.perf_counter() - t0, 4)
    return out


# ----------------------------------------------------------------------------- site level

@dataclass
class PrepareResult:
    site_dir: Path
    config: PrepareConfig                # resolved (concrete detector)
    params_key: str
    entries: list[dict[str, Any]]        # one per manifest row, manifest order
    wall_seconds: float = 0.0
    report_path: Path | None = None
    score_max: float = 27.0

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] == "ok"]

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] != "ok"]

    @property
    def cache_hits(self) -> int:
        return sum(1 for e in self.entries if e.get("cache") == "hit")

    @property
    def cache_misses(self) -> int:
        return sum(1 for e in self.entries if e.get("cache") == "miss")

    @property
    def num_clips(self) -> int:
        return sum(e.get("clips", 0) for e in self.ok)

    @property
    def cache_dir(self) -> Path:
        return cache_root(self.site_dir) / self.params_key

    def clips_path(self, entry: dict[str, Any]) -> Path:
        return self.cache_dir / f"{entry['digest']}.npy"

    def summary(self) -> str:
        s = (f"{self.site_dir.name}: {len(self.ok)}/{len(self.entries)} videos usable, "
             f"{self.num_clips} clips, {len(self.skipped)} skipped, cache "
             f"{self.cache_hits} hit / {self.cache_misses} miss, {self.wall_seconds:.1f} s")
        return s


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _run_one(path: str, digest: str, cfg: PrepareConfig, cache_params: dict,
             site_dir: str) -> dict:
    out = process_video(path, cfg)
    ClipCache(site_dir, cache_params).put(digest, out.meta, out.clips)
    return out.meta


def _mp_context():
    """Workers start from a clean interpreter (``forkserver``, else ``spawn``), never by
    ``fork``: a forked copy of a process that already used OpenCV's thread pool can hang
    in ``cv2.setNumThreads`` (seen once while preparing with 2 workers after a Haar run)."""
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _new_entry(row: Row) -> dict[str, Any]:
    """A report entry with the manifest row's fields."""
    return {"video": row.video, "line": row.line, "subject": row.subject,
            "visit": row.visit, "score": row.score, "label": row.label, "split": row.split}


def _mark_skipped(e: dict[str, Any], row: Row, site_dir: Path,
                 files: dict[str, list[int] | None]) -> bool:
    """Mark ``e`` skipped when the row has manifest problems or its video is not a regular
    file (then its fingerprint goes to ``files``); return whether it was skipped."""
    if not row.ok:
        e.update(status="skipped", kind="manifest", reason="; ".join(row.all_problems),
                 clips=0)
        return True
    path = site_dir / row.video
    if not path.is_file():
        e.update(status="skipped", kind="missing",
                 reason="file not found" if not path.exists() else "not a regular file",
                 clips=0)
        files[row.video] = fingerprint(path)
        return True
    return False


def _triage(manifest: Manifest, site_dir: Path, cache: ClipCache, digests: DigestIndex,
            files: dict[str, list[int] | None], reuse: bool
            ) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    """One entry per manifest row: skipped, a cache hit (``reuse``), or to do. Returns the
    entries and the jobs ``(entry index, video path, digest)``; records each video's
    fingerprint in ``files``."""
    entries: list[dict[str, Any]] = []
    todo: list[tuple[int, str, str]] = []
    for row in manifest.rows:
        e = _new_entry(row)
        entries.append(e)
        if _mark_skipped(e, row, site_dir, files):
            continue
        path = site_dir / row.video
        digest = digests.digest(row.video, path)
        files[row.video] = digests.entries[row.video][:2]
        e["digest"] = digest
        meta = cache.get(digest) if reuse else None
        if meta is not None:
            e.update(meta)
            e["cache"] = "hit"
        else:
            todo.append((len(entries) - 1, str(path), digest))
    return entries, todo


def _progress_bar(site_dir: Path, total: int, done: int, progress: bool) -> Any:
    """A tqdm bar on stderr already advanced by ``done`` (None without tqdm)."""
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=f"prepare {site_dir.name}", unit="video",
                   disable=not progress, file=sys.stderr, leave=True)
    except ImportError:  # pragma: no cover
        return None
    bar.update(done)
    return bar


def _run_pool(todo: list[tuple[int, str, str]], cfg: PrepareConfig, params: dict,
              site_dir: Path, workers: int, done: Callable[[int, dict], None]) -> None:
    """Process the jobs in ``workers`` processes, reporting each as it completes; on any
    error (or interrupt) cancel the jobs not yet started and re-raise."""
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=_mp_context(),
                             initializer=_worker_init) as pool:
        futs = {pool.submit(_run_one, path, digest, cfg, params, str(site_dir)): i
                for i, path, digest in todo}
        try:
            for fut in as_completed(futs):
                done(futs[fut], fut.result())
        except BaseException:
            for f in futs:
                f.cancel()
            raise


def _run_todo(entries: list[dict[str, Any]], todo: list[tuple[int, str, str]],
              cfg: PrepareConfig, params: dict, site_dir: Path, workers: int,
              progress: bool) -> int:
    """Process the videos not in the cache (serially, or in a pool when ``workers > 1``
    and there is more than one), merge each outcome into its entry (``cache`` miss), show
    progress. Returns the worker count used (>= 1)."""
    bar = _progress_bar(site_dir, len(entries), len(entries) - len(todo), progress)

    def done(i: int, meta: dict) -> None:
        entries[i].update(meta)
        entries[i]["cache"] = "miss"
        if bar is not None:
            bar.update(1)

    workers = max(1, int(workers))
    if workers == 1 or len(todo) <= 1:
        for i, path, digest in todo:
            done(i, _run_one(path, digest, cfg, params, str(site_dir)))
    else:
        _run_pool(todo, cfg, params, site_dir, workers, done)
    if bar is not None:
        bar.close()
    return workers


def _report(result: PrepareResult, params: dict, workers: int) -> dict[str, Any]:
    """The content of report.json: parameters, totals, every entry (without clip_starts)."""
    entries = result.entries
    return {
        "site": result.site_dir.name,
        "params_key": result.params_key,
        "params": params,
        "workers": workers,
        "wall_seconds": round(result.wall_seconds, 3),
        "totals": {"videos": len(entries), "ok": len(result.ok),
                   "skipped": len(result.skipped), "clips": result.num_clips,
                   "frames": sum(e.get("frames", 0) or 0 for e in result.ok),
                   "cache_hits": result.cache_hits, "cache_misses": result.cache_misses},
        "videos": [{k: v for k, v in e.items() if k != "clip_starts"} for e in entries],
    }


def prepare_site(site_dir: str | os.PathLike, cfg: PrepareConfig | None = None, *,
                 workers: int = 1, progress: bool = True, reuse: bool = True,
                 score_max: float | None = None) -> PrepareResult:
    """Prepare (or reuse from the cache) every usable video of a site.

    Raises :class:`mpdrm.data.manifest.ManifestError` when the manifest itself is unusable
    (missing, or a required column absent). Every row is accounted for in the result and in
    ``SITE_DIR/.mpdrm-cache/report.json``: ``status`` ``ok`` (``clips``, ``frames``,
    ``face_rate``, ``cache`` hit/miss) or ``skipped`` (``reason``). ``reuse=False``
    recomputes every video and overwrites its cache entry."""
    t0 = time.perf_counter()
    site_dir = Path(site_dir)
    cfg = (cfg or PrepareConfig()).resolve(site_dir)
    files = {rel: fingerprint(site_dir / rel) for rel in SITE_FILES}
    manifest = read_manifest(site_dir, score_max=score_max)
    params = cfg.cache_params()
    cache = ClipCache(site_dir, params)
    digests = DigestIndex(site_dir)
    entries, todo = _triage(manifest, site_dir, cache, digests, files, reuse)
    digests.save()
    cache.ensure()
    workers = _run_todo(entries, todo, cfg, params, site_dir, workers, progress)
    result = PrepareResult(site_dir, cfg, cache.key, entries,
                           wall_seconds=time.perf_counter() - t0, score_max=manifest.score_max)
    report = _report(result, params, workers)
    result.report_path = cache_root(site_dir) / "report.json"
    atomic_write_json(result.report_path, report)
    write_index(site_dir, cache.key, params, score_max=manifest.score_max,
                entries=report["videos"], files=files)
    return result
