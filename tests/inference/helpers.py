"""Small videos and model directories for the inference tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mpdrm
from mpdrm.data.prepare import PrepareConfig
from mpdrm.inference.modeldir import write_model_dir

# ----------------------------------------------------------------------------- videos

FACE_CX, FACE_CY, FACE_SIDE = 224.5, 113.5, 95.0   # the astronaut's face in the photograph
W, H, FPS = 320, 240, 15.0


def write_frames(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def astronaut_video(path: Path, n: int = 45) -> Path:
    """scikit-image's astronaut moving and zooming over a blurred background (as tests/data/test_face.py)."""
    skimage_data = pytest.importorskip("skimage.data")
    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    bg = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 6), None, 30, 200,
                       cv2.NORM_MINMAX)
    frames = []
    for i in range(n):
        u = i / max(n - 1, 1)
        s = 0.38 + 0.22 * u
        fx, fy = 90 + 140 * u + 15 * np.sin(6 * u), 95 + 30 * np.sin(3 * u)
        m = np.float32([[s, 0, fx - FACE_CX * s], [0, s, fy - FACE_CY * s]])
        frame = bg.copy()
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (W, H)) > 0
        frame[mask] = cv2.warpAffine(img, m, (W, H))[mask]
        frames.append(frame)
    return write_frames(path, frames)


def faceless_video(path: Path, n: int = 45) -> Path:
    """A gradient with a moving disc: no face."""
    base = np.tile(np.linspace(40, 200, W, dtype=np.float32), (H, 1))
    frames = []
    for i in range(n):
        f = base.copy()
        cv2.circle(f, (int(W / 2 + 40 * np.sin(i / 5)), H // 2), 30, 90.0, -1)
        frames.append(cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_GRAY2BGR))
    return write_frames(path, frames)


def haar_model_dir(path: Path, size: str = "tiny", image_size: int = 32) -> Path:
    """A model directory with untrained weights whose PrepareConfig uses the Haar detector."""
    torch.manual_seed(0)
    model = mpdrm.build_model(size, image_size=image_size, num_subjects=2).eval()
    config = model.config
    prep = PrepareConfig(frames=config.frames, size=config.image_size, grayscale=config.in_channels == 1,
                         detector="haar", fps=FPS)
    meta = {"model": config.to_dict(), "prepare": dataclasses.asdict(prep), "task": "regression", "num_classes": 2,
            "score_max": 27.0, "personality": "clip", "mode": "mpdrm", "subjects": ["A", "B"], "site": "test",
            "run_id": None, "round": 0}
    reference = torch.nn.functional.normalize(model.personality.prototypes.weight.detach(), dim=1)
    subjects = {"ids": ["A", "B"], "reference": reference}
    return write_model_dir(path, model.state_dict(), subjects, meta)
