"""Per-site cameras: frame size, frame rate, exposure, sensor noise, framing, background."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

FRAME_SIZES = ((96, 96), (112, 112), (128, 96), (128, 112), (120, 120), (112, 96))
FRAME_RATES = (15.0, 20.0, 25.0)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fps: float
    brightness: float     # added after contrast, grey levels
    contrast: float       # gain around mid-grey
    noise_sd: float       # sensor noise, grey levels
    face_scale: float     # face half-height / half the frame's smaller side
    offset_x: float       # face centre offset, fraction of the frame's smaller side
    offset_y: float
    background: tuple[int, int, int]
    gradient: float       # strength of the background's horizontal light gradient
    pattern_seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    def background_image(self) -> np.ndarray:
        """A static background: base colour, light gradient, a few soft shapes."""
        h, w = self.height, self.width
        img = np.empty((h, w, 3), np.float32)
        img[:] = self.background
        ramp = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None]
        img += ramp * self.gradient
        rng = np.random.default_rng(self.pattern_seed)
        canvas = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(3):
            colour = tuple(int(c) for c in np.clip(np.asarray(self.background)
                                                   + rng.normal(0, 25, 3), 0, 255))
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.rectangle(canvas, (x0, y0), (x0 + int(rng.integers(w // 6, w // 2)),
                                            y0 + int(rng.integers(h // 6, h // 2))), colour, -1)
        return cv2.GaussianBlur(canvas, (0, 0), 2.0)


def site_formats(n_sites: int, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    """(width, height, fps) per site: frame sizes and rates dealt from shuffled lists, so
    the first sites always differ (cycling when there are more sites than choices)."""
    sizes = [FRAME_SIZES[i] for i in rng.permutation(len(FRAME_SIZES))]
    rates = [FRAME_RATES[i] for i in rng.permutation(len(FRAME_RATES))]
    return [(*sizes[i % len(sizes)], rates[i % len(rates)]) for i in range(n_sites)]


def sample_camera(rng: np.random.Generator, fmt: tuple[int, int, float] | None = None) -> Camera:
    if fmt is None:
        fmt = (*FRAME_SIZES[int(rng.integers(0, len(FRAME_SIZES)))],
               FRAME_RATES[int(rng.integers(0, len(FRAME_RATES)))])
    w, h, fps = fmt
    grey = rng.uniform(60, 200)
    tint = rng.normal(0, 20, 3)
    bg = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    return Camera(
        width=w, height=h, fps=float(fps),
        brightness=float(rng.uniform(-25, 25)), contrast=float(rng.uniform(0.75, 1.2)),
        noise_sd=float(rng.uniform(1.0, 6.0)), face_scale=float(rng.uniform(0.58, 0.72)),
        offset_x=float(rng.uniform(-0.05, 0.05)), offset_y=float(rng.uniform(-0.04, 0.06)),
        background=bg, gradient=float(rng.uniform(0, 30)),
        pattern_seed=int(rng.integers(0, 2**31 - 1)))
