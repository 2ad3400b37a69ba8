"""The Haar path on a real photograph (scikit-image's astronaut, offline), animated into a
video: moving and scaling over a textured background."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpdrm.data.face import HaarDetector, crop_square, smooth_track
from mpdrm.data.prepare import PrepareConfig, prepare_site, process_video

skimage_data = pytest.importorskip("skimage.data")

# the astronaut's face in the 512 x 512 photograph (Haar's box: x 177, y 66, 95 x 95)
FACE_CX, FACE_CY, FACE_SIDE = 224.5, 113.5, 95.0
W, H, N, FPS = 320, 240, 45, 15.0


def astronaut_video(path):
    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 6)
    bg = cv2.normalize(bg, None, 30, 200, cv2.NORM_MINMAX)
    truth = []
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(N):
        u = i / (N - 1)
        s = 0.38 + 0.22 * u                              # zoom in: face 36 -> 57 px
        fx = 90 + 140 * u + 15 * np.sin(6 * u)           # face centre moves left to right
        fy = 95 + 30 * np.sin(3 * u)
        m = np.float32([[s, 0, fx - FACE_CX * s], [0, s, fy - FACE_CY * s]])
        frame = bg.copy()
        warped = cv2.warpAffine(img, m, (W, H))
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (W, H)) > 0
        frame[mask] = warped[mask]
        wr.write(frame)
        truth.append((fx, fy, FACE_SIDE * s))
    wr.release()
    return np.array(truth)


def test_haar_finds_the_face_and_crops_follow_it(tmp_path):
    path = tmp_path / "astronaut.mp4"
    truth = astronaut_video(path)
    cfg = PrepareConfig(detector="haar", size=96, frames=8, stride=2, hop=8, fps=FPS)
    out = process_video(path, cfg)
    assert out.meta["status"] == "ok", out.meta
    assert out.meta["frames"] == N
    # found in most frames
    assert out.meta["face_rate"] >= 0.8
    assert out.detected.mean() >= 0.8
    # the smoothed track follows the known face position and size
    track = out.track
    err = np.linalg.norm(track[:, :2] - truth[:, :2], axis=1) / truth[:, 2]
    assert np.median(err) < 0.1 and err.max() < 0.3, err
    assert np.corrcoef(track[:, 2], truth[:, 2])[0, 1] > 0.9
    assert np.corrcoef(track[:, 0], truth[:, 0])[0, 1] > 0.98
    # the crops show the face, centred: Haar finds it again in the crop, near the middle
    det = HaarDetector(min_face_fraction=0.3)
    clip_frames = out.clips[:, 0].reshape(-1, 96, 96)          # grayscale crops
    centred = 0
    for f in clip_frames:
        boxes = det.detect(f)
        if len(boxes):
            x, y, w, h = boxes[np.argmax(boxes[:, 2])]
            if abs(x + w / 2 - 48) < 12 and abs(y + h / 2 - 48) < 12:
                centred += 1
    assert centred >= 0.8 * len(clip_frames)


def test_haar_site_report(tmp_path, helpers):
    site = tmp_path / "site"
    (site / "videos").mkdir(parents=True)
    astronaut_video(site / "videos/a.mp4")
    helpers.write_video(site / "videos/noface.mp4", helpers.moving_blob_frames(45))
    helpers.write_manifest(site, [["videos/a.mp4", "A", 1, 10],
                                  ["videos/noface.mp4", "B", 1, 10]])
    res = prepare_site(site, PrepareConfig(), progress=False)   # auto -> haar (no site.json)
    assert res.config.detector == "haar"
    a, b = res.entries
    assert a["status"] == "ok" and a["face_rate"] >= 0.8 and a["clips"] == 2
    assert b["status"] == "skipped"
    assert b["reason"] == ("no face detected in any of 45 checked frames "
                           "(Haar frontal-face cascade)")
    assert b["face_rate"] == 0.0


def test_smoothing_carries_across_misses_and_rejects_outliers():
    box = np.array([100, 100, 50, 50], np.float32)
    raw = [None, None, box, box, None, None, box + [200, 0, 0, 0], box, box, None]
    track = smooth_track(raw, median_window=5, smooth_window=1)
    # leading misses back-filled, gaps carried, the one-frame jump removed by the median
    assert np.allclose(track[:, 0], 125) and np.allclose(track[:, 2], 50)
    assert smooth_track([None, None]) is None


def test_crop_outside_frame_is_padded():
    frame = np.full((50, 80, 3), 100, np.uint8)
    c = crop_square(frame, 5, 5, 40, 16)
    assert c.shape == (16, 16, 3) and (c == 100).all()
    c = crop_square(frame, -500, -500, 40, 16)            # fully outside: clamped in
    assert c.shape == (16, 16, 3)
