"""Face detection (OpenCV Haar cascade), temporal smoothing of the box, and cropping.

Per frame, the frontal-face Haar cascade shipped by opencv-python(-headless) 4.x runs on a
grayscale, histogram-equalised copy scaled down to at most ``detect_max_side`` pixels
(default 480: a face of 10% of a 640x480 frame's height is still 36 px there; the cascade
needs about 24), looking for faces of at least ``min_face_fraction`` of the smaller side.
Once a face was found within the last second, the next frame is searched first only in a
window of 2.5x the face's side around it, for faces of 0.75x-1.33x its size (about 6x
cheaper, and it finds faces smaller than the whole-frame search would; a face does not change
size by a third between two detections a quarter of a second apart); the whole frame is
searched when that window shows none and the last detection is more than half a second old
(a single miss costs no whole-frame search: the gap is filled, below). When several boxes
come back we keep the one nearest the previous track (the largest before a track exists).
While a track is recent, a box whose centre is further from it than the face could have
moved (``max_face_speed`` face sides per second, at least one side) is not taken as the face:
a background pattern the cascade mistakes for a face, found by the whole-frame search on a
frame where the real face was missed, would otherwise capture the track for good (the window
search keeps finding it). The per-frame boxes then go through, in this order:

1. fill (``fill``): a frame without a detection gets a box interpolated linearly (centre and
   side) between the detections before and after it (``"linear"``, the default), or keeps
   the last box (``"carry"``); frames before the first detection take the first box and
   frames after the last take the last (no extrapolation). With ``detect_every=n`` the
   cascade runs on every n-th frame only; linear fill keeps a moving face's track within
   a few per cent of its side where carrying it would lag by up to n-1 frames;
2. a running median over ``median_window`` frames (kills single-frame false positives);
3. a centred moving average over ``smooth_window`` frames (zero-lag smoothing of jitter).

The crop is a square of side ``box_side * (1 + 2 * margin)`` around the smoothed centre;
pixels outside the frame are filled by replicating the border. The result is resized with
area interpolation to ``size`` x ``size``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

HAAR_FILE = "haarcascade_frontalface_default.xml"
_CASCADES: dict[str, cv2.CascadeClassifier] = {}


def haar_path() -> str:
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not base:
        raise RuntimeError("this OpenCV build ships no Haar cascades (cv2.data.haarcascades); "
                           "install opencv-python-headless 4.x (5.x dropped them)")
    return base + HAAR_FILE


def _cascade() -> cv2.CascadeClassifier:
    path = haar_path()
    c = _CASCADES.get(path)
    if c is None:
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        _CASCADES[path] = c
    return c


class HaarDetector:
    """Frontal-face detector; ``detect(frame)`` returns boxes (x, y, w, h) in frame pixels."""

    def __init__(self, detect_max_side: int = 480, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_face_fraction: float = 0.1,
                 near_sizes: tuple[float, float] = (0.75, 1.33)):
        self.detect_max_side = detect_max_side
        self.near_sizes = near_sizes
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.cascade = _cascade()

    def _scale(self, frame: np.ndarray) -> float:
        """Factor that brings the frame's longer side down to ``detect_max_side``."""
        return min(1.0, self.detect_max_side / max(frame.shape[:2]))

    @staticmethod
    def _gray(frame: np.ndarray, scale: float) -> np.ndarray:
        """Grayscale copy of ``frame`` (or of a part of it) resized by ``scale``."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            h, w = gray.shape
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        return gray

    def detect(self, frame: np.ndarray, near: np.ndarray | None = None,
               fallback: bool = True) -> np.ndarray:
        """All faces in the frame. With ``near`` (a recent box), first look only in a window
        of 2.5x its side around it, at ``near_sizes`` times its size (several times cheaper);
        when nothing is found there, search the whole frame if ``fallback``, else return no
        box."""
        scale = self._scale(frame)
        if near is not None:
            boxes = self._detect_near(frame, np.asarray(near, np.float64), scale)
            if len(boxes) or not fallback:
                return boxes
        gray = cv2.equalizeHist(self._gray(frame, scale))
        m = max(12, int(self.min_face_fraction * min(gray.shape)))
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(m, m))
        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32)
        return np.asarray(boxes, np.float32) / scale

    def _detect_near(self, frame: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
        """Faces in the window of 2.5x ``box``'s side around it (frame pixels in and out); only
        that window is converted and resized."""
        h, w = frame.shape[:2]
        x, y, bw, bh = box
        side = max(bw, bh)
        x0, y0 = int(max(0, x + bw / 2 - 1.25 * side)), int(max(0, y + bh / 2 - 1.25 * side))
        x1, y1 = int(min(w, x + bw / 2 + 1.25 * side)), int(min(h, y + bh / 2 + 1.25 * side))
        if (x1 - x0) * scale < 24 or (y1 - y0) * scale < 24:
            return np.zeros((0, 4), np.float32)
        roi = cv2.equalizeHist(self._gray(frame[y0:y1, x0:x1], scale))
        lo = max(12, int(self.near_sizes[0] * side * scale))
        hi = max(lo + 1, int(min(self.near_sizes[1] * side * scale, *roi.shape)))
        boxes = self.cascade.detectMultiScale(roi, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(lo, lo),
                                              maxSize=(hi, hi))
        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32)
        out = np.asarray(boxes, np.float32) / scale
        out[:, 0] += x0
        out[:, 1] += y0
        return out


def pick_box(boxes: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
    """Choose one detection: nearest to the previous box's centre, else the largest."""
    if len(boxes) == 0:
        return None
    if previous is None or len(boxes) == 1:
        return boxes[int(np.argmax(boxes[:, 2] * boxes[:, 3]))]
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    pc = previous[:2] + previous[2:] / 2
    d = np.linalg.norm(centres - pc, axis=1) / max(float(previous[2]), 1.0)
    d += np.abs(np.log(boxes[:, 2] / max(float(previous[2]), 1.0)))
    return boxes[int(np.argmin(d))]


def box_params(box: np.ndarray) -> tuple[float, float, float]:
    """(centre_x, centre_y, side) of an (x, y, w, h) box; side is the geometric mean."""
    x, y, w, h = (float(v) for v in box)
    return x + w / 2, y + h / 2, (w * h) ** 0.5


def continues_track(box: np.ndarray, previous: np.ndarray, seconds_apart: float,
                    max_face_speed: float = 4.0) -> bool:
    """Whether ``box`` can be the face that was at ``previous`` ``seconds_apart`` earlier:
    its centre is at most ``max(1, max_face_speed * seconds_apart)`` of the previous box's
    side away from the previous centre."""
    (cx, cy, _), (px, py, side) = box_params(box), box_params(previous)
    reach = max(1.0, max_face_speed * seconds_apart) * max(side, 1.0)
    return float(np.hypot(cx - px, cy - py)) <= reach


def _running(values: np.ndarray, window: int, fn) -> np.ndarray:
    if window <= 1 or len(values) <= 1:
        return values
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = fn(padded[i:i + 2 * half + 1], axis=0)
    return out


FILLS = ("linear", "carry")


def fill_track(raw: Sequence[np.ndarray | None], fill: str = "linear") -> np.ndarray | None:
    """(F, 3) track of (centre_x, centre_y, side) with every frame filled from the frames that
    have a box: linear interpolation between the nearest detections (``"linear"``) or the
    last detection (``"carry"``); before the first and after the last detection the nearest
    one. Returns None when no frame has a box."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, not {fill!r}")
    known = [i for i, b in enumerate(raw) if b is not None]
    if not known:
        return None
    params = np.array([box_params(raw[i]) for i in known], np.float64)
    frames = np.arange(len(raw))
    if fill == "linear":
        return np.stack([np.interp(frames, known, params[:, k]) for k in range(3)], axis=1)
    latest = np.searchsorted(known, frames, side="right") - 1
    return params[np.maximum(latest, 0)]


def smooth_track(raw: Sequence[np.ndarray | None], *, fill: str = "linear",
                 median_window: int = 5, smooth_window: int = 7) -> np.ndarray | None:
    """Turn per-frame detections (a box or None) into a smoothed (F, 3) track of
    (centre_x, centre_y, side): :func:`fill_track`, then a running median and a centred
    moving average. Returns None when there is no detection at all."""
    track = fill_track(raw, fill)
    if track is None:
        return None
    track = _running(track, median_window, np.median)
    track = _running(track, smooth_window, np.mean)
    return track


def crop_square(frame: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Square crop centred at (cx, cy), border-replicated outside the frame, resized."""
    h, w = frame.shape[:2]
    side_i = max(2, int(round(side)))
    x0 = int(round(cx - side_i / 2))
    y0 = int(round(cy - side_i / 2))
    x1, y1 = x0 + side_i, y0 + side_i
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if any(pads):
        if pads[0] >= side_i or pads[1] >= side_i or pads[2] >= side_i or pads[3] >= side_i:
            # entirely outside the frame: clamp into it
            x0 = min(max(x0, 0), max(0, w - side_i))
            y0 = min(max(y0, 0), max(0, h - side_i))
            x1, y1 = x0 + side_i, y0 + side_i
            pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
        sub = frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        sub = cv2.copyMakeBorder(sub, *pads, cv2.BORDER_REPLICATE)
    else:
        sub = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if side_i >= size else cv2.INTER_LINEAR
    return cv2.resize(sub, (size, size), interpolation=interp)


def centre_square(frame: np.ndarray, size: int) -> np.ndarray:
    """The ``none`` detector: the largest centred square, resized."""
    h, w = frame.shape[:2]
    side = min(h, w)
    return crop_square(frame, w / 2, h / 2, side, size)
