"""Video decoding with OpenCV: sanity checks, probing, and frame-rate resampling.

Any container/codec the installed OpenCV (FFmpeg backend) reads is accepted. Before OpenCV
sees a file we catch the cases it reports badly: a zero-byte file, and an MP4/MOV whose box
structure ends early (a truncated download or copy; OpenCV just says "cannot open").
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp")


class VideoError(Exception):
    """A video that cannot be used. ``kind`` is a stable keyword, ``str(e)`` the reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float              # as stored in the container (0 when unknown)
    frame_count: int        # as stored in the container (may be an estimate)
    size_bytes: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


_MP4_TOP = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pnot", b"meta",
            b"styp", b"sidx", b"moof", b"mfra", b"pdin", b"prft", b"emsg"}


def mp4_structure_problem(path: str | os.PathLike) -> str | None:
    """For an ISO-BMFF file (MP4/MOV/3GP, recognised by its ``ftyp`` box): walk the top-level
    boxes and return a description if the file ends inside a box or lacks ``moov``.
    Returns None for a well-formed file and for files that are not ISO-BMFF at all."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"wide", b"free", b"mdat", b"moov"):
            return None
        pos, seen = 0, set()
        while pos < size:
            f.seek(pos)
            hdr = f.read(8)
            if len(hdr) < 8:
                return f"truncated mp4: file ends inside a box header at byte {pos} of {size}"
            box_size, box_type = struct.unpack(">I4s", hdr)
            if box_size == 1:
                ext = f.read(8)
                if len(ext) < 8:
                    return f"truncated mp4: file ends inside a box header at byte {pos}"
                box_size = struct.unpack(">Q", ext)[0]
            elif box_size == 0:
                box_size = size - pos
            if box_type not in _MP4_TOP and not seen:
                return None  # not really ISO-BMFF; let OpenCV judge
            if box_size < 8:
                return f"corrupt mp4: box {box_type!r} at byte {pos} has size {box_size}"
            if pos + box_size > size:
                name = box_type.decode("latin-1")
                return (f"truncated mp4: box '{name}' at byte {pos} needs {box_size} bytes "
                        f"but the file ends after {size - pos}")
            seen.add(box_type)
            pos += box_size
        if b"moov" not in seen and b"moof" not in seen:
            return "truncated or corrupt mp4: no 'moov' index box"
    return None


def open_capture(path: str | os.PathLike) -> cv2.VideoCapture:
    """Open a video after the cheap sanity checks; raises VideoError."""
    path = str(path)
    if not os.path.exists(path):
        raise VideoError("missing", "file not found")
    if not os.path.isfile(path):
        raise VideoError("not_video", "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoError("empty", "zero-byte file (0 bytes)")
    problem = mp4_structure_problem(path)
    if problem:
        raise VideoError("truncated", problem)
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError("not_video", "not a readable video (OpenCV cannot open it)")
    return cap


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open, read the first frame, and return the container's properties."""
    cap = open_capture(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError("not_video", "not a readable video (no frame can be decoded)")
        if not cap.grab():
            raise VideoError("not_video", "not a video: a single still image")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        if not math.isfinite(count) or count <= 0 or count > 1e8:   # unknown: count them
            count = 2
            while cap.grab():
                count += 1
        return VideoInfo(frame.shape[1], frame.shape[0], fps, int(count),
                         os.path.getsize(path))
    finally:
        cap.release()


def resampled_count(n_src: int, fps_in: float, fps_out: float | None) -> int:
    """How many frames :func:`iter_frames` yields for ``n_src`` source frames."""
    if not fps_out or not fps_in or abs(fps_in - fps_out) < 1e-6:
        return n_src
    ratio = fps_in / fps_out
    # output k is kept while round(k * ratio) < n_src
    return max(0, math.ceil((n_src - 0.5) / ratio - 1e-9))


@dataclass
class DecodeStats:
    fps_in: float = 0.0
    fps_out: float = 0.0
    fps_assumed: bool = False
    source_frames: int = 0      # decoded from the file
    frames: int = 0             # after resampling
    width: int = 0
    height: int = 0
    header_frames: int = 0      # the container's own count


def iter_frames(path: str | os.PathLike, fps: float | None, stats: DecodeStats | None = None,
                ) -> Iterator[np.ndarray]:
    """Yield BGR frames resampled to ``fps`` (nearest source frame in time; frames are
    repeated when upsampling and skipped - without being converted - when downsampling).
    ``fps=None`` keeps the source rate. A container without a usable rate is assumed to be at
    ``fps`` (``stats.fps_assumed``). Raises VideoError for unusable files, including a file
    whose decoding stops well before the frame count its header promises."""
    stats = stats if stats is not None else DecodeStats()
    cap = open_capture(path)
    try:
        fps_in = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps_in) or fps_in <= 0 or fps_in > 1000:
            fps_in = float(fps or 25.0)
            stats.fps_assumed = True
        fps_out = float(fps) if fps else fps_in
        stats.fps_in, stats.fps_out = fps_in, fps_out
        stats.header_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ratio = fps_in / fps_out
        k = 0
        j = 0
        while True:
            target = math.floor(k * ratio + 0.5 + 1e-9)
            if not cap.grab():
                break
            if target == j:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    break
                if stats.frames == 0:
                    stats.height, stats.width = frame.shape[:2]
                while target == j:
                    stats.frames += 1
                    yield frame
                    k += 1
                    target = math.floor(k * ratio + 0.5 + 1e-9)
            j += 1
            stats.source_frames = j
        if j == 0:
            raise VideoError("not_video", "not a readable video (no frame can be decoded)")
        if j == 1 and stats.header_frames <= 0:
            raise VideoError("not_video", "not a video: a single still image")
        if stats.header_frames > 10 and j < 0.9 * stats.header_frames - 2:
            raise VideoError("truncated", f"truncated or corrupt video: decoded {j} of "
                                          f"{stats.header_frames} frames")
    finally:
        cap.release()

