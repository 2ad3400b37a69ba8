"""The Haar path on a real photograph (scikit-image's astronaut, offline), animated into a
video: moving and scaling over a textured background."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpdrm.data.face import (HaarDetector, continues_track, crop_square, fill_track,
                             smooth_track)
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
    assert out.detected[::cfg.detect_every].mean() >= 0.8
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
    assert b["reason"] == ("no face detected in any of 12 checked frames "   # every 4th of 45
                           "(Haar frontal-face cascade)")
    assert b["face_rate"] == 0.0


def test_track_between_detections_on_a_moving_face(tmp_path):
    """Detecting every 4th frame and interpolating tracks the known face about as well as
    detecting every frame; carrying the last box instead lags behind the motion."""
    path = tmp_path / "astronaut.mp4"
    truth = astronaut_video(path)

    def error(**kw):
        out = process_video(path, PrepareConfig(detector="haar", size=32, frames=8, **kw))
        assert out.meta["status"] == "ok", out.meta
        return np.mean(np.linalg.norm(out.track[:, :2] - truth[:, :2], axis=1) / truth[:, 2])

    every_frame = error(detect_every=1, fill="carry")
    default = error()                                  # every 4th frame, linear fill
    carried = error(detect_every=4, fill="carry")
    assert PrepareConfig().detect_every == 4 and PrepareConfig().fill == "linear"
    assert default <= every_frame + 0.02, (default, every_frame)
    assert carried > default + 0.02, (carried, default)


def two_faces_video(path, n=30, hidden=range(8, 14)):
    """The astronaut at x=120 throughout, except on the frames ``hidden``, where it is
    blanked out; a second astronaut at x=360 from frame 2 on: a face the tracker must not
    jump to."""
    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    w, h, s = 480, 240, 0.4
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 6)
    bg = cv2.normalize(bg, None, 30, 200, cv2.NORM_MINMAX)

    def paste(frame, fx, fy=120.0):
        m = np.float32([[s, 0, fx - FACE_CX * s], [0, s, fy - FACE_CY * s]])
        warped = cv2.warpAffine(img, m, (w, h))
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (w, h)) > 0
        frame[mask] = warped[mask]

    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for i in range(n):
        frame = bg.copy()
        if i >= 2:
            paste(frame, 360.0)
        if i not in hidden:
            paste(frame, 120.0)
        wr.write(frame)
    wr.release()


def test_a_face_elsewhere_does_not_capture_the_track(tmp_path):
    path = tmp_path / "two.mp4"
    two_faces_video(path)
    # frames 0, 4, 8, ... are checked; 8 misses (near search only), 12 searches the whole frame
    cfg = PrepareConfig(detector="haar", size=32, frames=8, fps=FPS)
    track = process_video(path, cfg).track
    assert np.abs(track[:, 0] - 120).max() < 10, track[:, 0]
    # without the speed limit the second face takes the track over for good
    loose = process_video(path, PrepareConfig(detector="haar", size=32, frames=8, fps=FPS,
                                              max_face_speed=1e6)).track
    assert np.abs(loose[16:, 0] - 360).max() < 10, loose[:, 0]


def test_continues_track_allows_a_side_or_the_speed_limit():
    prev = np.array([100, 100, 40, 40])                         # centre (120, 120), side 40
    assert continues_track(prev + [39, 0, 0, 0], prev, 0.0)      # within one side
    assert not continues_track(prev + [41, 0, 0, 0], prev, 0.0)
    assert continues_track(prev + [0, 79, 0, 0], prev, 0.5)      # 4 sides/s x 0.5 s = 2 sides
    assert not continues_track(prev + [0, 81, 0, 0], prev, 0.5)
    assert continues_track(prev + [0, 81, 0, 0], prev, 0.5, max_face_speed=5.0)


def test_fill_track_interpolates_centre_and_side_linearly():
    a = np.array([0, 0, 10, 10], np.float64)            # centre (5, 5), side 10
    b = np.array([30, 60, 20, 20], np.float64)          # centre (40, 70), side 20
    raw = [None, a, None, None, None, b, None]
    linear = fill_track(raw, "linear")
    steps = np.array([0, 0, 1, 2, 3, 4, 4]) / 4          # ends take the nearest detection
    expected = np.array([5, 5, 10]) + steps[:, None] * np.array([35, 65, 10])
    np.testing.assert_allclose(linear, expected, rtol=0, atol=1e-12)
    carry = fill_track(raw, "carry")
    np.testing.assert_allclose(carry[:5], [[5, 5, 10]] * 5)
    np.testing.assert_allclose(carry[5:], [[40, 70, 20]] * 2)
    assert fill_track([None, None], "linear") is None
    with pytest.raises(ValueError, match="fill must be one of"):
        fill_track(raw, "cubic")
    with pytest.raises(ValueError, match="fill must be one of"):
        PrepareConfig(fill="cubic")


def test_smoothing_carries_across_misses_and_rejects_outliers():
    box = np.array([100, 100, 50, 50], np.float32)
    raw = [None, None, box, box, None, None, box + [200, 0, 0, 0], box, box, None]
    track = smooth_track(raw, fill="carry", median_window=5, smooth_window=1)
    # leading misses back-filled, gaps carried, the one-frame jump removed by the median
    assert np.allclose(track[:, 0], 125) and np.allclose(track[:, 2], 50)
    assert smooth_track([None, None]) is None


def test_crop_outside_frame_is_padded():
    frame = np.full((50, 80, 3), 100, np.uint8)
    c = crop_square(frame, 5, 5, 40, 16)
    assert c.shape == (16, 16, 3) and (c == 100).all()
    c = crop_square(frame, -500, -500, 40, 16)            # fully outside: clamped in
    assert c.shape == (16, 16, 3)
