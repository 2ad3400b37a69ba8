"""prepare: bad videos skipped with a reason, good ones kept; report.json; the clip cache."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mpdrm.data.cache import CACHE_DIR_NAME
from mpdrm.data.cli import main
from mpdrm.data.clips import clip_starts, cut_clips
from mpdrm.data.manifest import ManifestError
from mpdrm.data.prepare import PrepareConfig, prepare_site, process_video
from mpdrm.data.video import iter_frames, resampled_count

NONE = PrepareConfig(detector="none")


@pytest.fixture()
def mixed_site(tmp_path, helpers, good_video_src):
    site = tmp_path / "site"
    (site / "videos").mkdir(parents=True)
    for i in (1, 2, 3):
        shutil.copy(good_video_src, site / f"videos/good{i}.mp4")
    (site / "videos/empty.mp4").write_bytes(b"")
    (site / "videos/notes.mp4").write_text("not a video")
    data = Path(good_video_src).read_bytes()
    (site / "videos/cut.mp4").write_bytes(data[: len(data) // 2])
    helpers.write_video(site / "videos/short.mp4", helpers.moving_blob_frames(12))
    helpers.write_manifest(site, [
        ["videos/good1.mp4", "A", 1, 3], ["videos/good2.mp4", "A", 2, 9],
        ["videos/good3.mp4", "B", 1, "x"], ["videos/empty.mp4", "B", 2, 1],
        ["videos/notes.mp4", "C", 1, 1], ["videos/cut.mp4", "C", 2, 1],
        ["videos/short.mp4", "D", 1, 1], ["videos/absent.mp4", "D", 2, 1]])
    return site


def test_prepare_skips_bad_keeps_good(mixed_site):
    res = prepare_site(mixed_site, NONE, progress=False)
    status = {e["video"]: (e["status"], e.get("reason", "")) for e in res.entries}
    assert status["videos/good1.mp4"][0] == "ok" and status["videos/good2.mp4"][0] == "ok"
    assert status["videos/good3.mp4"] == ("skipped", "score 'x' is not a number")
    assert status["videos/empty.mp4"] == ("skipped", "zero-byte file (0 bytes)")
    assert status["videos/notes.mp4"] == ("skipped",
                                          "not a readable video (OpenCV cannot open it)")
    assert status["videos/cut.mp4"][1].startswith("truncated mp4: box 'mdat'")
    assert status["videos/short.mp4"][1].startswith("video too short: 12 frames at 15 fps")
    assert status["videos/absent.mp4"] == ("skipped", "file not found")
    report = json.loads((mixed_site / CACHE_DIR_NAME / "report.json").read_text())
    assert report["totals"]["videos"] == 8 and report["totals"]["ok"] == 2
    good = next(v for v in report["videos"] if v["video"] == "videos/good1.mp4")
    # 45 frames at 15 fps, window 31, hop 8 -> starts 0, 8
    assert good["clips"] == 2 and good["frames"] == 45 and good["face_rate"] is None
    assert all("reason" in v for v in report["videos"] if v["status"] == "skipped")
    clips = np.load(res.clips_path(res.ok[0]))
    assert clips.shape == (2, 1, 16, 64, 64) and clips.dtype == np.uint8


def test_prepare_cli_exit_status(mixed_site, tmp_path, helpers, capsys):
    assert main(["prepare", str(mixed_site), "--detector", "none", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{mixed_site}/manifest.csv:5: videos/empty.mp4: skipped: zero-byte file" in out
    assert "2/8 videos usable" in out
    # nothing usable -> non-zero
    bad = tmp_path / "bad"
    (bad / "videos").mkdir(parents=True)
    (bad / "videos/a.mp4").write_bytes(b"")
    helpers.write_manifest(bad, [["videos/a.mp4", "A", 1, 3]])
    assert main(["prepare", str(bad), "--detector", "none", "--quiet"]) == 1
    assert main(["prepare", str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "manifest.csv: missing manifest" in capsys.readouterr().out
    with pytest.raises(ManifestError):
        prepare_site(tmp_path / "nowhere", NONE, progress=False)


def _mtimes(site):
    return {p.name: p.stat().st_mtime_ns for p in (site / CACHE_DIR_NAME).rglob("*.npy")}


def test_cache_reuse_and_invalidation(mixed_site, helpers):
    first = prepare_site(mixed_site, NONE, progress=False)
    assert first.cache_misses == 6 and first.cache_hits == 0   # 6 files reached decoding
    before = _mtimes(mixed_site)
    second = prepare_site(mixed_site, NONE, progress=False)
    assert second.cache_hits == 6 and second.cache_misses == 0
    assert _mtimes(mixed_site) == before                        # nothing rewritten
    assert [e["status"] for e in second.entries] == [e["status"] for e in first.entries]
    assert second.params_key == first.params_key

    # a parameter change lands in a new cache folder: everything recomputed
    third = prepare_site(mixed_site, PrepareConfig(detector="none", size=32), progress=False)
    assert third.params_key != first.params_key
    assert third.cache_misses == 6 and third.cache_hits == 0
    assert np.load(third.clips_path(third.ok[0])).shape[-1] == 32
    # ... and the old entries are still there for the old parameters
    assert prepare_site(mixed_site, NONE, progress=False).cache_hits == 6

    # editing one video's content invalidates that video only
    helpers.write_video(mixed_site / "videos/good2.mp4", helpers.moving_blob_frames(60, seed=3))
    fourth = prepare_site(mixed_site, NONE, progress=False)
    miss = [e["video"] for e in fourth.entries if e.get("cache") == "miss"]
    assert miss == ["videos/good2.mp4"]
    assert next(e for e in fourth.entries if e["video"] == "videos/good2.mp4")["frames"] == 60

    # renaming a file keeps its cache entry (keyed by content, not name)
    (mixed_site / "videos/good1.mp4").rename(mixed_site / "videos/renamed.mp4")
    text = (mixed_site / "manifest.csv").read_text().replace("good1", "renamed")
    (mixed_site / "manifest.csv").write_text(text)
    fifth = prepare_site(mixed_site, NONE, progress=False)
    assert next(e for e in fifth.entries if e["video"] == "videos/renamed.mp4")["cache"] == "hit"

    # reuse=False recomputes
    assert prepare_site(mixed_site, NONE, progress=False, reuse=False).cache_hits == 0


def test_haar_params_do_not_key_the_none_path():
    a = PrepareConfig(detector="none", margin=0.1).cache_params()
    b = PrepareConfig(detector="none", margin=0.4).cache_params()
    assert a == b
    assert (PrepareConfig(detector="haar", margin=0.1).cache_params()
            != PrepareConfig(detector="haar", margin=0.4).cache_params())
    with pytest.raises(ValueError):
        PrepareConfig().cache_params()        # "auto" must be resolved per site first
    with pytest.raises(ValueError):
        PrepareConfig(detector="dlib")


def test_parallel_workers_same_clips(tiny_cohort):
    site = tiny_cohort / "site-01"
    a = prepare_site(site, PrepareConfig(size=48), workers=1, progress=False, reuse=False)
    clips_a = [np.load(a.clips_path(e)).copy() for e in a.ok]
    b = prepare_site(site, PrepareConfig(size=48), workers=2, progress=False, reuse=False)
    assert b.cache_misses == len(b.entries)
    clips_b = [np.load(b.clips_path(e)) for e in b.ok]
    assert len(clips_a) == len(clips_b) == 8
    assert all(np.array_equal(x, y) for x, y in zip(clips_a, clips_b))


@pytest.mark.parametrize("fps_in,n_in,expected", [(30.0, 60, 30), (15.0, 45, 45),
                                                   (10.0, 30, 45), (25.0, 50, 30)])
def test_fps_resampling(tmp_path, helpers, fps_in, n_in, expected):
    frames = helpers.moving_blob_frames(n_in)
    for i, f in enumerate(frames):          # stamp the source index, in binary, 16 px blocks
        for bit in range(6):
            f[:16, 16 * bit:16 * bit + 16] = 255 if (i >> bit) & 1 else 0
    p = helpers.write_video(tmp_path / "v.mp4", frames, fps=fps_in)
    out = list(iter_frames(p, 15.0))
    assert len(out) == expected == resampled_count(n_in, fps_in, 15.0)
    # output k shows the source frame nearest to time k/15
    src = [sum(int(o[4:12, 16 * b + 4:16 * b + 12].mean() > 128) << b for b in range(6))
           for o in out]
    assert src == [int(np.floor(k * fps_in / 15.0 + 0.5)) for k in range(expected)]


def test_clip_cutting():
    assert clip_starts(30, 16, 2, 8) == []
    assert clip_starts(31, 16, 2, 8) == [0]
    assert clip_starts(64, 16, 2, 8) == [0, 8, 16, 24, 32]
    assert clip_starts(64, 16, 2, 8, max_clips=2) == [0, 32]
    frames = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    clips = cut_clips(frames.astype(np.uint8), [0, 8], 4, 3)
    assert clips.shape == (2, 1, 4, 2, 2)
    assert clips[1, 0, :, 0, 0].tolist() == [8, 11, 14, 17]


def test_rgb_output(good_video_src):
    out = process_video(good_video_src, PrepareConfig(detector="none", grayscale=False,
                                                      size=32))
    assert out.meta["status"] == "ok" and out.clips.shape == (2, 3, 16, 32, 32)
