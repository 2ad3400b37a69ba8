"""Face detection (OpenCV Haar cascade), temporal smoothing of the box, and cropping.

Per frame, the frontal-face Haar cascade shipped by opencv-python(-headless) 4.x runs on a
grayscale, histogram-equalised copy scaled down to at most ``detect_max_side`` pixels
(default 480: a face of 10% of a 640x480 frame's height is still 36 px there; the cascade
needs about 24), looking for faces of at least ``min_face_fraction`` of the smaller side.
Once a face was found within the last second, the next frame is searched first only in a
window of 3x the face's side around it, for faces of 0.6x-1.6x its size (about 4x cheaper,
and it finds faces smaller than the whole-frame search would); the whole frame is searched
when that window shows none. When several boxes come back we keep the one nearest the
previous track (the largest before a track exists). The per-frame boxes then go through,
in this order:

1. carry: a frame without a detection keeps the last box; frames before the first detection
   take the first box (back-fill);
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
                 min_neighbors: int = 5, min_face_fraction: float = 0.1):
        self.detect_max_side = detect_max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.cascade = _cascade()

    def _gray(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.detect_max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        return gray, scale

    def detect(self, frame: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
        """All faces in the frame. With ``near`` (a recent box), first look only in a window
        of 3x its side around it, at 0.6x-1.6x its size (several times cheaper); fall back
        to the whole frame when nothing is found there."""
        gray, scale = self._gray(frame)
        if near is not None:
            boxes = self._detect_near(gray, np.asarray(near, np.float64) * scale)
            if len(boxes):
                return boxes / scale
        gray = cv2.equalizeHist(gray)
        m = max(12, int(self.min_face_fraction * min(gray.shape)))
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(m, m))
        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32)
        return np.asarray(boxes, np.float32) / scale

    def _detect_near(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        x, y, bw, bh = box
        side = max(bw, bh)
        x0, y0 = int(max(0, x + bw / 2 - 1.5 * side)), int(max(0, y + bh / 2 - 1.5 * side))
        x1, y1 = int(min(w, x + bw / 2 + 1.5 * side)), int(min(h, y + bh / 2 + 1.5 * side))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return np.zeros((0, 4), np.float32)
        roi = cv2.equalizeHist(np.ascontiguousarray(gray[y0:y1, x0:x1]))
        lo = max(12, int(0.6 * side))
        hi = max(lo + 1, int(min(1.6 * side, x1 - x0, y1 - y0)))
        boxes = self.cascade.detectMultiScale(roi, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(lo, lo),
                                              maxSize=(hi, hi))
        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32)
        out = np.asarray(boxes, np.float32)
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


def _running(values: np.ndarray, window: int, fn) -> np.ndarray:
    if window <= 1 or len(values) <= 1:
        return values
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = fn(padded[i:i + 2 * half + 1], axis=0)
    return out


def smooth_track(raw: Sequence[np.ndarray | None], *, median_window: int = 5,
                 smooth_window: int = 7) -> np.ndarray | None:
    """Turn per-frame detections (a box or None) into a smoothed (F, 3) track of
    (centre_x, centre_y, side). Returns None when there is no detection at all."""
    first = next((b for b in raw if b is not None), None)
    if first is None:
        return None
    track = np.empty((len(raw), 3), np.float64)
    last = first
    for i, b in enumerate(raw):
        if b is not None:
            last = b
        x, y, w, h = (float(v) for v in last)
        track[i] = (x + w / 2, y + h / 2, (w * h) ** 0.5)
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
