"""Which face to track when a video's first search finds more than one.

A still face-like thing in the background (a poster, a pattern the cascade takes for a face)
can be larger than the patient's face, and once the track starts on it the search near the
tracked box keeps finding it. So when the first whole-frame search finds several boxes, the
Haar path goes on searching whole frames for a short window, links the boxes into
tracklets (:func:`link_tracklets`) and starts on the one a live face makes: the largest
tracklet seen on at least half of the window's searches, unless another one changes the
pixels under it more than ``motion_ratio`` times as much (:func:`region_change`). Sensor
noise changes a picture and a still person alike, so the rule compares candidates rather
than thresholding one; a patient who keeps perfectly still beside a poster falls back to
the largest box, as without the window.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .face import box_params, continues_track

#: A tracklet: frame index -> (x, y, w, h) box.
Tracklet = dict[int, np.ndarray]


def link_tracklets(frames: Sequence[int], boxes: Sequence[np.ndarray], fps: float,
                   max_face_speed: float = 4.0) -> list[Tracklet]:
    """Link the boxes of successive searches (``boxes[k]``: (N, 4) on frame ``frames[k]``)
    into tracklets: each box joins the nearest tracklet it can continue
    (:func:`~mpdrm.data.face.continues_track`) that has no box on that frame yet, else
    starts one."""
    tracklets: list[Tracklet] = []
    for i, found in zip(frames, boxes):
        taken: set[int] = set()
        for box in found:
            cx, cy, _ = box_params(box)
            options = []
            for t, tracklet in enumerate(tracklets):
                last = max(tracklet)
                if t in taken or not continues_track(box, tracklet[last], (i - last) / fps,
                                                     max_face_speed):
                    continue
                px, py, _ = box_params(tracklet[last])
                options.append((float(np.hypot(cx - px, cy - py)), t))
            if options:
                t = min(options)[1]
                tracklets[t][i] = box
            else:
                tracklets.append({i: box})
                t = len(tracklets) - 1
            taken.add(t)
    return tracklets


def region_change(greys: Sequence[np.ndarray], box: np.ndarray) -> float:
    """Largest mean absolute grey-level change of the pixels under ``box`` (a fixed region)
    between the first of ``greys`` and each later one; 0 with fewer than two frames or an
    empty region."""
    h, w = greys[0].shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = int(max(0, x)), int(max(0, y))
    x1, y1 = int(min(w, x + bw)), int(min(h, y + bh))
    if len(greys) < 2 or x1 <= x0 or y1 <= y0:
        return 0.0
    first = greys[0][y0:y1, x0:x1].astype(np.float32)
    return max(float(np.abs(g[y0:y1, x0:x1].astype(np.float32) - first).mean())
               for g in greys[1:])


def choose_tracklet(tracklets: Sequence[Tracklet], frames: Sequence[int],
                    greys: Sequence[np.ndarray], motion_ratio: float = 2.0) -> Tracklet:
    """The tracklet a live face makes (see the module docstring): among those seen on at
    least half of ``frames`` (all, when none is), the largest, unless another changes the
    pixels under its first box more than ``motion_ratio`` times as much as the largest does."""
    if not tracklets:
        raise ValueError("no tracklet to choose from")
    steady = [t for t in tracklets if 2 * len(t) >= len(frames)] or list(tracklets)
    largest = max(steady, key=lambda t: np.mean([box_params(b)[2] for b in t.values()]))
    change = {id(t): region_change(greys, t[min(t)]) for t in steady}
    mover = max(steady, key=lambda t: change[id(t)])
    if mover is not largest and change[id(mover)] > motion_ratio * change[id(largest)]:
        return mover
    return largest


@dataclass
class StartWindow:
    """The searches of a video's first ``span`` frames from ``first``, held while several
    boxes compete for the start of the track; :meth:`choose` gives the chosen tracklet.

    Attributes
    ----------
    first : int
        Frame index of the search that found several boxes.
    span : int
        Frames the window lasts (``start_seconds * fps``).
    fps : float
        Frame rate of the frame indices.
    max_face_speed : float
        Face sides per second a face can move (:func:`link_tracklets`).
    motion_ratio : float
        See :func:`choose_tracklet`.
    """

    first: int
    span: int
    fps: float
    max_face_speed: float = 4.0
    motion_ratio: float = 2.0
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    greys: list[np.ndarray] = field(default_factory=list)

    def add(self, i: int, frame: np.ndarray, boxes: np.ndarray) -> None:
        """Record the whole-frame search of frame ``i``."""
        self.frames.append(i)
        self.boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        self.greys.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))

    def over(self, i: int) -> bool:
        """Whether the window has run its ``span`` by frame ``i``."""
        return i - self.first >= self.span

    def choose(self) -> Tracklet:
        """The tracklet to start the track on (empty when no search found anything)."""
        tracklets = link_tracklets(self.frames, self.boxes, self.fps, self.max_face_speed)
        if not tracklets:
            return {}
        return choose_tracklet(tracklets, self.frames, self.greys, self.motion_ratio)
