"""Drawing one visit of one subject into an mp4 file with OpenCV.

Time series per visit (all sampled at the camera's frame times, from the video's own RNG):

- smiles: Poisson events (rate ``smile_rate``), each a rise (0.35 s) / hold (0.4-1 s) / decay
  (0.5 s) envelope of strength ``smile_amp`` x U(0.7, 1.2): mouth corners lift, the mouth
  widens and opens (a dark polygon);
- head motion: two incommensurate sinusoids per axis at ``head_speed`` Hz, amplitude
  ``head_amp`` face half-heights, and a roll of ``head_amp`` x 45 degrees;
- blinks: Poisson events (rate ``blink_rate``), eyes closed for ``blink_dur`` x U(0.8, 1.2) s;
- brows: Poisson raises (0.7/s) of strength ``brow_amp`` x U(0.7, 1.2), up to 0.14 half-heights;
- gaze: pupils lowered by ``gaze_down`` x 0.5 eye heights, and the whole inner face pitched
  down by ``gaze_down`` x 0.08 half-heights; small horizontal saccades (severity-free);
- tic (signature): a cheek dimple for 0.15 s every ``tic_period`` s; a constant head tilt.

The camera then applies contrast, brightness and Gaussian sensor noise.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from .camera import Camera
from .model import Signature

SHIFT = 4
ONE = 1 << SHIFT
AA = cv2.LINE_AA


def _events(rng: np.random.Generator, rate: float, t_end: float, t_start: float = -2.0):
    times = []
    if rate <= 0:
        return times
    t = t_start + rng.exponential(1.0 / rate)
    while t < t_end:
        times.append(t)
        t += rng.exponential(1.0 / rate)
    return times


def _envelope(t: np.ndarray, t0: float, rise: float, hold: float, decay: float) -> np.ndarray:
    x = np.zeros_like(t)
    up = (t >= t0) & (t < t0 + rise)
    u = (t[up] - t0) / rise
    x[up] = u * u * (3 - 2 * u)
    x[(t >= t0 + rise) & (t < t0 + rise + hold)] = 1.0
    dn = (t >= t0 + rise + hold) & (t < t0 + rise + hold + decay)
    d = 1 - (t[dn] - t0 - rise - hold) / decay
    x[dn] = d * d * (3 - 2 * d)
    return x


def visit_signals(rng: np.random.Generator, dyn: dict[str, float], sig: Signature,
                  n_frames: int, fps: float) -> dict[str, np.ndarray]:
    """Per-frame signals for one visit (see the module docstring)."""
    t = np.arange(n_frames) / fps
    dur = n_frames / fps
    smile = np.zeros(n_frames)
    for t0 in _events(rng, dyn["smile_rate"], dur):
        a = dyn["smile_amp"] * rng.uniform(0.7, 1.2)
        smile = np.maximum(smile, a * _envelope(t, t0, 0.35, rng.uniform(0.4, 1.0), 0.5))
    closed = np.zeros(n_frames)
    for t0 in _events(rng, dyn["blink_rate"], dur, -1.0):
        d = dyn["blink_dur"] * rng.uniform(0.8, 1.2)
        closed = np.maximum(closed, _envelope(t, t0, 0.05, d, 0.08))
    brow = np.zeros(n_frames)
    for t0 in _events(rng, 0.7, dur):
        a = dyn["brow_amp"] * rng.uniform(0.7, 1.2)
        brow = np.maximum(brow, a * _envelope(t, t0, 0.15, rng.uniform(0.2, 0.5), 0.3))
    f = dyn["head_speed"]
    amp = dyn["head_amp"]
    ph = rng.uniform(0, 2 * math.pi, 6)
    w = 2 * math.pi * f * t
    dx = amp * (0.65 * np.sin(w + ph[0]) + 0.35 * np.sin(1.73 * w + ph[1]))
    dy = amp * 0.6 * (0.6 * np.sin(0.81 * w + ph[2]) + 0.4 * np.sin(1.37 * w + ph[3]))
    roll = amp * 45.0 * np.sin(0.63 * w + ph[4])
    # horizontal saccades: piecewise-constant pupil position, severity-free
    gx = np.zeros(n_frames)
    tt, x = 0.0, float(rng.normal(0, 0.25))
    while tt < dur:
        nxt = tt + rng.uniform(0.5, 1.5)
        gx[(t >= tt) & (t < nxt)] = x
        x = float(np.clip(rng.normal(0, 0.25), -0.5, 0.5))
        tt = nxt
    tic = (((t / sig.tic_period) + sig.tic_phase) % 1.0) < (0.15 / sig.tic_period)
    return {"t": t, "smile": np.minimum(smile, 1.3), "closed": closed,
            "brow": np.minimum(brow, 1.3), "dx": dx, "dy": dy, "roll": roll, "gx": gx,
            "tic": tic.astype(np.float64)}


class _Pose:
    """Face-units -> fixed-point pixel coordinates for one frame."""

    def __init__(self, cx: float, cy: float, r: float, angle_deg: float):
        self.cx, self.cy, self.r = cx, cy, r
        self.angle = angle_deg
        a = math.radians(angle_deg)
        self.c, self.s = math.cos(a), math.sin(a)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        px = self.cx + (x * self.c - y * self.s) * self.r
        py = self.cy + (x * self.s + y * self.c) * self.r
        return int(round(px * ONE)), int(round(py * ONE))

    def ax(self, a: float, b: float) -> tuple[int, int]:
        return max(1, int(round(a * self.r * ONE))), max(1, int(round(b * self.r * ONE)))

    def px(self, v: float) -> int:
        return max(1, int(round(v * self.r)))


def _curve(p0, p1, p2, n=7):
    out = []
    for i in range(n):
        u = i / (n - 1)
        a, b, c = (1 - u) ** 2, 2 * u * (1 - u), u * u
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


def draw_face(img: np.ndarray, pose: _Pose, sig: Signature, *, smile: float, closed: float,
              brow: float, gaze: float, gx: float, tic: bool) -> None:
    skin, hair = sig.skin, sig.hair
    dark = tuple(int(c * 0.55) for c in skin)
    hw = sig.aspect
    p = gaze * 0.08                                      # pitch: inner face moves down
    if sig.hair_style == 1:                              # long hair, behind the face
        cv2.ellipse(img, pose.pt(0, 0.15), pose.ax(hw * 1.25, 1.18), pose.angle, 0, 360,
                    hair, -1, AA, SHIFT)
    cv2.ellipse(img, pose.pt(0, 0), pose.ax(hw, 1.0), pose.angle, 0, 360, skin, -1, AA, SHIFT)
    if sig.hair_style in (0, 1, 2):                      # cap
        cv2.ellipse(img, pose.pt(0, -0.42), pose.ax(hw * 1.04, 0.66), pose.angle, 180, 360,
                    hair, -1, AA, SHIFT)
    if sig.hair_style == 2:                              # fringe
        pts = [pose.pt(-hw * 0.95, -0.45), pose.pt(hw * 0.95, -0.45), pose.pt(hw * 0.6, -0.30),
               pose.pt(-hw * 0.2, -0.36), pose.pt(-hw * 0.9, -0.28)]
        cv2.fillPoly(img, [np.array(pts, np.int32)], hair, AA, SHIFT)
    if sig.hair_style == 3:                              # beard
        cv2.ellipse(img, pose.pt(0, 0.32), pose.ax(hw * 0.97, 0.68), pose.angle, 0, 180,
                    hair, -1, AA, SHIFT)
    # eyes
    open_ = 1.0 - closed
    for side in (-1, 1):
        ex, ey = side * sig.eye_dx, sig.eye_y + p
        if open_ > 0.2:
            cv2.ellipse(img, pose.pt(ex, ey), pose.ax(sig.eye_w, sig.eye_h * open_), pose.angle,
                        0, 360, (235, 235, 235), -1, AA, SHIFT)
            cv2.ellipse(img, pose.pt(ex, ey), pose.ax(sig.eye_w, sig.eye_h * open_), pose.angle,
                        0, 360, dark, 1, AA, SHIFT)
            if open_ > 0.4:
                py = min(gaze * 0.5, 0.8) * sig.eye_h * open_
                r = int(round(0.6 * sig.eye_h * open_ * pose.r * ONE))
                cv2.circle(img, pose.pt(ex + gx * sig.eye_w, ey + py), max(r, ONE // 2),
                           (40, 30, 25), -1, AA, SHIFT)
        else:
            cv2.line(img, pose.pt(ex - sig.eye_w, ey), pose.pt(ex + sig.eye_w, ey), dark,
                     pose.px(0.035), AA, SHIFT)
        if sig.glasses:
            cv2.circle(img, pose.pt(ex, ey), int(sig.eye_w * 1.35 * pose.r * ONE),
                       (30, 30, 30), 1, AA, SHIFT)
        # brows
        by = ey - sig.eye_h - sig.brow_gap - brow * 0.14
        inner = pose.pt(side * (sig.eye_dx - sig.brow_len), by + sig.brow_slant)
        outer = pose.pt(side * (sig.eye_dx + sig.brow_len), by - sig.brow_slant)
        cv2.line(img, inner, outer, tuple(int(c * 0.8) for c in hair), pose.px(sig.brow_thick),
                 AA, SHIFT)
    if sig.glasses:
        cv2.line(img, pose.pt(-sig.eye_dx + sig.eye_w * 1.35, sig.eye_y + p),
                 pose.pt(sig.eye_dx - sig.eye_w * 1.35, sig.eye_y + p), (30, 30, 30), 1, AA,
                 SHIFT)
    # nose
    ny = sig.eye_y + p + 0.12 + sig.nose_len
    cv2.line(img, pose.pt(0.0, sig.eye_y + p + 0.08), pose.pt(0.04, ny), dark, 1, AA, SHIFT)
    cv2.line(img, pose.pt(-0.06, ny), pose.pt(0.06, ny), dark, 1, AA, SHIFT)
    # mouth
    my, mw = sig.mouth_y + p, sig.mouth_w * (1 + 0.18 * smile)
    lift, opening = 0.13 * smile, 0.13 * smile
    left, right = (-mw, my - lift), (mw, my - lift)
    upper = _curve(left, (0.0, my - 0.02 - 0.03 * smile), right)
    lower = _curve(right, (0.0, my + 0.02 + opening + lift), left)
    poly = np.array([pose.pt(x, y) for x, y in upper + lower], np.int32)
    cv2.fillPoly(img, [poly], (45, 35, 110), AA, SHIFT)
    cv2.polylines(img, [poly], True, tuple(int(c * 0.45) for c in skin), 1, AA, SHIFT)
    if tic:
        cv2.ellipse(img, pose.pt(sig.tic_side * (sig.mouth_w + 0.12), my - 0.06),
                    pose.ax(0.05, 0.09), pose.angle, 0, 360, dark, 1, AA, SHIFT)


def render_visit(path: str | os.PathLike, camera: Camera, sig: Signature,
                 dyn: dict[str, float], seconds: float, rng: np.random.Generator,
                 background: np.ndarray | None = None) -> dict:
    """Render and write one video; returns {"frames", "signals" (per-frame arrays)}."""
    n = max(1, int(round(seconds * camera.fps)))
    sg = visit_signals(rng, dyn, sig, n, camera.fps)
    bg = background if background is not None else camera.background_image()
    h, w = camera.height, camera.width
    m = min(w, h)
    r0 = camera.face_scale * m / 2 * sig.size
    cx0, cy0 = w / 2 + camera.offset_x * m, h / 2 + camera.offset_y * m
    gaze = dyn["gaze_down"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)   # the suffix picks the container
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), camera.fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {tmp}")
    gain = np.float32(camera.contrast)
    offset = np.float32(128.0 * (1 - camera.contrast) + camera.brightness)
    try:
        for i in range(n):
            img = bg.copy()
            pose = _Pose(cx0 + sg["dx"][i] * r0, cy0 + sg["dy"][i] * r0, r0,
                         sig.tilt_deg + sg["roll"][i])
            draw_face(img, pose, sig, smile=float(sg["smile"][i]), closed=float(sg["closed"][i]),
                      brow=float(sg["brow"][i]), gaze=gaze, gx=float(sg["gx"][i]),
                      tic=bool(sg["tic"][i]))
            noise = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(camera.noise_sd)
            frame = img.astype(np.float32) * gain + offset + noise
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    os.replace(tmp, path)
    return {"frames": n, "signals": sg}
