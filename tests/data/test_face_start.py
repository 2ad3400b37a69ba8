"""Choosing the face to track when a video starts with more than one (``face_start``): a
still face-like picture must not take the track from the live face, on a real video decoded
by OpenCV, and the rule's parts on exact inputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpdrm.data.face_start import StartWindow, choose_tracklet, link_tracklets, region_change
from mpdrm.data.prepare import PrepareConfig, process_video

skimage_data = pytest.importorskip("skimage.data")

FACE_CX, FACE_CY = 224.5, 113.5       # the astronaut's face in the 512 x 512 photograph
W, H, N, FPS = 480, 240, 45, 15.0


def poster_and_patient_video(path, patient_moves: bool = True, n: int = N,
                             travel: float = 120.0) -> np.ndarray:
    """A large still astronaut (a poster, face side about 48 px) at x=360 and a smaller one
    (the patient, about 38 px) drifting from x=80 to x=80+``travel`` over ``n`` frames; returns the patient's centre per
    frame."""
    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 6)
    bg = cv2.normalize(bg, None, 30, 200, cv2.NORM_MINMAX)

    def paste(frame, fx, fy, s):
        m = np.float32([[s, 0, fx - FACE_CX * s], [0, s, fy - FACE_CY * s]])
        warped = cv2.warpAffine(img, m, (W, H))
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (W, H)) > 0
        frame[mask] = warped[mask]

    truth = []
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(n):
        fx = 80 + travel * i / (n - 1) if patient_moves else 80.0
        frame = bg.copy()
        paste(frame, 360.0, 110.0, 0.5)
        paste(frame, fx, 120.0, 0.4)
        wr.write(frame)
        truth.append(fx)
    wr.release()
    return np.array(truth)


def test_a_still_picture_larger_than_the_face_does_not_take_the_track(tmp_path):
    path = tmp_path / "poster.mp4"
    truth = poster_and_patient_video(path)
    cfg = PrepareConfig(detector="haar", size=32, frames=8, fps=FPS)
    assert cfg.start_seconds == 1.0
    out = process_video(path, cfg)
    assert out.meta["status"] == "ok", out.meta
    assert np.abs(out.track[:, 0] - truth).max() < 12, out.track[:, 0]
    # starting on the largest box at once (as before the start window) tracks the poster
    at_once = process_video(path, PrepareConfig(detector="haar", size=32, frames=8, fps=FPS,
                                                start_seconds=0)).track
    assert np.abs(at_once[:, 0] - 360).max() < 12, at_once[:, 0]


def test_a_still_patient_beside_a_picture_starts_on_the_largest(tmp_path):
    """With nothing moving, the rule has no evidence: the largest box, as without it."""
    path = tmp_path / "still.mp4"
    poster_and_patient_video(path, patient_moves=False)
    track = process_video(path, PrepareConfig(detector="haar", size=32, frames=8, fps=FPS)).track
    assert np.abs(track[:, 0] - 360).max() < 12, track[:, 0]


def test_a_video_shorter_than_the_start_window_still_gets_its_track(tmp_path):
    path = tmp_path / "short.mp4"
    truth = poster_and_patient_video(path, n=12, travel=30.0)  # 0.8 s; the window is 1 s
    out = process_video(path, PrepareConfig(detector="haar", size=32, frames=4, stride=1,
                                            hop=4, fps=FPS))
    assert out.meta["status"] == "ok", out.meta
    assert out.detected.sum() >= 2
    assert np.abs(out.track[:, 0] - truth).max() < 12, out.track[:, 0]


def box(cx, cy, side):
    return np.array([cx - side / 2, cy - side / 2, side, side], np.float32)


def test_link_tracklets_follows_each_face_and_starts_new_ones():
    frames = [0, 4, 8]
    boxes = [np.stack([box(50, 50, 20), box(200, 50, 30)]),
             np.stack([box(200, 51, 30), box(58, 50, 20)]),        # reply order swapped
             np.stack([box(66, 50, 20), box(120, 150, 20)])]       # a new one far away
    tracklets = link_tracklets(frames, boxes, fps=15.0)
    assert [sorted(t) for t in tracklets] == [[0, 4, 8], [0, 4], [8]]
    np.testing.assert_allclose(tracklets[0][8], box(66, 50, 20))
    np.testing.assert_allclose(tracklets[1][4], box(200, 51, 30))


def test_region_change_and_choice_compare_candidates():
    still = np.full((60, 100), 100, np.uint8)
    greys = [still.copy() for _ in range(3)]
    greys[2][10:30, 10:30] = 140                       # something changes under box a only
    a, b = box(20, 20, 20), box(70, 20, 30)
    assert region_change(greys, a) == pytest.approx(40.0)
    assert region_change(greys, b) == 0.0
    assert region_change(greys[:1], a) == 0.0
    ta, tb = {0: a, 4: a, 8: a}, {0: b, 4: b, 8: b}
    assert choose_tracklet([ta, tb], [0, 4, 8], greys) is ta          # b larger, a moves
    assert choose_tracklet([ta, tb], [0, 4, 8], [still] * 3) is tb    # nothing moves: largest
    blip = {8: box(20, 20, 40)}                                       # seen once of three
    assert choose_tracklet([ta, tb, blip], [0, 4, 8], [still] * 3) is tb
    with pytest.raises(ValueError, match="no tracklet"):
        choose_tracklet([], [0], greys)


def test_start_window_spans_its_frames_and_may_find_nothing():
    window = StartWindow(first=4, span=15, fps=15.0)
    frame = np.zeros((20, 20, 3), np.uint8)
    window.add(4, frame, np.zeros((0, 4)))
    assert not window.over(18) and window.over(19)
    assert window.choose() == {}
    with pytest.raises(ValueError, match="start_seconds"):
        PrepareConfig(start_seconds=-1)
