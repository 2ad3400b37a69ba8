"""Bad input: every case gets a clear message (checked here), all in one pass."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mpdrm.data.check import check_site
from mpdrm.data.cli import main
from mpdrm.data.manifest import ManifestError, read_manifest
from mpdrm.data.prepare import PrepareConfig

NONE = PrepareConfig(detector="none")


def make_site(tmp_path, helpers, good_video_src, rows, header=("video", "subject", "visit",
                                                                "score")):
    site = tmp_path / "site"
    (site / "videos").mkdir(parents=True)
    for r in rows:
        name = r[0]
        if name.startswith("videos/good"):
            shutil.copy(good_video_src, site / name)
    helpers.write_manifest(site, rows, header)
    return site


def problems(site, **kw):
    res = check_site(site, cfg=kw.pop("cfg", NONE), **kw)
    return [str(p) for p in res.problems], res


def test_clean_site_summary(tmp_path, helpers, good_video_src, capsys):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "A", 1, 3], ["videos/good2.mp4", "A", 2, 12],
                      ["videos/good3.mp4", "B", 1, 20]])
    lines, res = problems(site)
    assert lines == [] and res.ok
    assert main(["check", str(site), "--detector", "none"]) == 0
    out = capsys.readouterr().out
    assert "OK site: 2 subjects, 3 visits, 3 videos, score 3-20" in out


def test_missing_manifest(tmp_path, capsys):
    site = tmp_path / "empty_site"
    site.mkdir()
    lines, _ = problems(site)
    assert lines == ["manifest.csv: missing manifest (expected a CSV with columns video, "
                     "subject, visit, score)"]
    with pytest.raises(ManifestError, match="missing manifest"):
        read_manifest(site)
    assert main(["check", str(site)]) == 1
    assert f"{site}/manifest.csv: missing manifest" in capsys.readouterr().out


def test_missing_site_folder(tmp_path):
    lines, _ = problems(tmp_path / "nope")
    assert lines[0].endswith("no such site folder")


def test_missing_required_column(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src, [["videos/good1.mp4", "A", 1]],
                     header=("video", "subject", "visit"))
    lines, _ = problems(site)
    assert len(lines) == 1
    assert lines[0].startswith("manifest.csv:1: missing required column 'score'")


def test_score_not_numeric_and_out_of_range(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "A", 1, "abc"], ["videos/good2.mp4", "A", 2, 31],
                      ["videos/good3.mp4", "B", 1, -1], ["videos/good4.mp4", "B", 2, ""],
                      ["videos/good5.mp4", "C", 1, "nan"]])
    lines, _ = problems(site)
    assert lines == ["manifest.csv:2: score 'abc' is not a number",
                     "manifest.csv:3: score 31 out of range [0, 27]",
                     "manifest.csv:4: score -1 out of range [0, 27]",
                     "manifest.csv:5: missing score",
                     "manifest.csv:6: score 'nan' is not a number"]
    # the scale maximum comes from site.json (or --score-max)
    (site / "site.json").write_text('{"score_max": 63}')
    lines, _ = problems(site)
    assert "manifest.csv:3: score 31 out of range [0, 63]" not in lines
    lines, _ = problems(site, score_max=20)
    assert "manifest.csv:3: score 31 out of range [0, 20]" in lines


def test_duplicate_row(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "A", 1, 3], ["videos/good2.mp4", "A", 2, 4],
                      ["videos/good1.mp4", "A", 1, 3], ["./videos/good2.mp4", "B", 1, 4]])
    lines, _ = problems(site)
    assert lines == [
        "manifest.csv:4: duplicate row: video 'videos/good1.mp4' is already listed on line 2",
        "manifest.csv:5: duplicate row: video './videos/good2.mp4' is already listed on line 3"]


def test_listed_file_missing(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "A", 1, 3], ["videos/absent.mp4", "A", 2, 4]])
    lines, _ = problems(site)
    assert lines == ["manifest.csv:3: videos/absent.mp4: file not found"]


def test_zero_byte_file(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src, [["videos/empty.mp4", "A", 1, 3]])
    (site / "videos/empty.mp4").write_bytes(b"")
    lines, _ = problems(site)
    assert lines == ["manifest.csv:2: videos/empty.mp4: zero-byte file (0 bytes)"]


def test_truncated_mp4(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src, [["videos/cut.mp4", "A", 1, 3]])
    data = Path(good_video_src).read_bytes()
    (site / "videos/cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    lines, _ = problems(site)
    assert len(lines) == 1
    assert lines[0].startswith("manifest.csv:2: videos/cut.mp4: truncated mp4: box 'mdat' at "
                               "byte")
    assert "but the file ends after" in lines[0]


def test_not_a_video(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/notes.mp4", "A", 1, 3], ["videos/notes.avi", "A", 2, 3]])
    (site / "videos/notes.mp4").write_text("these are meeting notes, not a video\n" * 20)
    (site / "videos/notes.avi").write_bytes(bytes(range(256)) * 40)
    lines, _ = problems(site)
    assert lines == [
        "manifest.csv:2: videos/notes.mp4: not a readable video (OpenCV cannot open it)",
        "manifest.csv:3: videos/notes.avi: not a readable video (OpenCV cannot open it)"]


def test_still_image_is_not_a_video(tmp_path, helpers, good_video_src):
    import cv2
    import numpy as np
    site = make_site(tmp_path, helpers, good_video_src, [["videos/photo.mp4", "A", 1, 3]])
    ok, buf = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))
    (site / "videos/photo.mp4").write_bytes(buf.tobytes())
    lines, _ = problems(site)
    assert lines == ["manifest.csv:2: videos/photo.mp4: not a video: a single still image"]
    from mpdrm.data.prepare import process_video
    out = process_video(site / "videos/photo.mp4", NONE)
    assert out.meta["reason"] == "not a video: a single still image"


def test_video_shorter_than_one_clip(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src, [["videos/short.mp4", "A", 1, 3]])
    helpers.write_video(site / "videos/short.mp4", helpers.moving_blob_frames(15), fps=15)
    lines, _ = problems(site)
    assert lines == ["manifest.csv:2: videos/short.mp4: video too short: 15 frames at 15 fps "
                     "(1.00 s) < one clip window of 31 frames (2.07 s)"]


def test_no_detectable_face_haar(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src, [["videos/good1.mp4", "A", 1, 3]])
    lines, _ = problems(site, cfg=PrepareConfig(detector="haar"))
    assert lines == ["manifest.csv:2: videos/good1.mp4: no face detected in any of 12 frames "
                     "sampled over the video (Haar frontal-face cascade)"]
    # the 'none' path does not look for faces
    assert problems(site)[0] == []


def test_identity_fields_disagree(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "A", 1, 3, "F", 1970],
                      ["videos/good2.mp4", "A", 2, 5, "M", 1970],
                      ["videos/good3.mp4", "A", 3, 5, "F", 1970],
                      ["videos/good4.mp4", "B", 1, 9, "M", 1980],
                      ["videos/good5.mp4", "B", 2, 9, "M", 1981]],
                     header=("video", "subject", "visit", "score", "sex", "birth_year"))
    lines, _ = problems(site)
    assert lines == [
        "manifest.csv:3: subject 'A': visits disagree on identity field 'sex': 'F' (line 2) "
        "vs 'M' (line 3)",
        "manifest.csv:6: subject 'B': visits disagree on identity field 'birth_year': '1980' "
        "(line 5) vs '1981' (line 6)"]
    # every row of such a subject is unusable for prepare
    man = read_manifest(site)
    assert [r.ok for r in man.rows] == [False] * 5


def test_other_row_problems(tmp_path, helpers, good_video_src):
    site = make_site(tmp_path, helpers, good_video_src,
                     [["videos/good1.mp4", "", "x", 3, "maybe", "validation"],
                      ["../elsewhere.mp4", "A", 1, 3, "1", "train"],
                      ["videos/good2.mp4", "A", 2, 3, "1", "test"]],
                     header=("video", "subject", "visit", "score", "label", "split"))
    lines, _ = problems(site)
    assert "manifest.csv:2: missing subject id" in lines
    assert "manifest.csv:2: visit 'x' is not an integer >= 0" in lines
    assert "manifest.csv:2: label 'maybe' is not an integer >= 0" in lines
    assert "manifest.csv:2: split 'validation' is not one of train, test" in lines
    assert ("manifest.csv:3: video path '../elsewhere.mp4' must be relative and inside the "
            "site folder") in lines
    assert any("subject 'A': visits disagree on split 'split'" in ln for ln in lines)


def test_all_problems_in_one_pass(tmp_path, helpers, good_video_src, capsys):
    rows = [["videos/good1.mp4", "A", 1, 3, "F"],       # fine
            ["videos/good2.mp4", "A", 2, "abc", "F"],   # non-numeric score
            ["videos/good3.mp4", "B", 1, 99, "M"],      # out of range
            ["videos/good1.mp4", "C", 1, 3, "M"],       # duplicate
            ["videos/absent.mp4", "C", 2, 3, "M"],      # missing file
            ["videos/empty.mp4", "D", 1, 3, "F"],       # zero bytes
            ["videos/cut.mp4", "D", 2, 3, "F"],         # truncated
            ["videos/notes.mp4", "E", 1, 3, "M"],       # not a video
            ["videos/short.mp4", "E", 2, 3, "M"],       # too short
            ["videos/good4.mp4", "F", 1, 3, "M"],       # identity conflict (2 rows, 1 problem)
            ["videos/good5.mp4", "F", 2, 3, "F"]]
    site = make_site(tmp_path, helpers, good_video_src, rows,
                     header=("video", "subject", "visit", "score", "sex"))
    (site / "videos/empty.mp4").write_bytes(b"")
    data = Path(good_video_src).read_bytes()
    (site / "videos/cut.mp4").write_bytes(data[: len(data) // 2])
    (site / "videos/notes.mp4").write_text("not a video")
    helpers.write_video(site / "videos/short.mp4", helpers.moving_blob_frames(10))
    code = main(["check", str(site), "--detector", "none"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert code == 1
    assert len(lines) == 9, lines
    assert all(ln.startswith(f"{site}/manifest.csv:") for ln in lines)
    for needle in ("is not a number", "out of range", "duplicate row", "file not found",
                   "zero-byte file", "truncated mp4", "not a readable video", "too short",
                   "disagree on identity field 'sex'"):
        assert sum(needle in ln for ln in lines) == 1, needle
    assert "site: 9 problems" in captured.err
