"""The AVEC2013/2014 layout adapter, on a tree the test builds."""
from __future__ import annotations

import csv
import json
import shutil

from mpdrm.data.avec import convert_avec
from mpdrm.data.check import check_site
from mpdrm.data.cli import main
from mpdrm.data.prepare import PrepareConfig


def build_avec_tree(root, video):
    """AVEC2014-like: two tasks per visit, per-recording BDI-II label files, and an
    AVEC2013-like partition with *_cut_video files; plus noise the adapter must ignore."""
    layout = {
        "Training/Freeform/203_1_Freeform_video.mp4": None,
        "Training/Northwind/203_1_Northwind_video.mp4": None,
        "Training/Freeform/203_2_Freeform_video.mp4": None,
        "Development/Freeform/205_1_Freeform_video.mp4": None,
        "Testing/Freeform/236_1_Freeform_video.mp4": None,       # no label: reported
        "AVEC2013/Training/Video/310_3_cut_video.mp4": None,
    }
    labels = {"Training/DepressionLabels/203_1_Depression.csv": "17\n",
              "Training/DepressionLabels/203_2_Depression.csv": "9\n",
              "Development/DepressionLabels/205_1_Depression.csv": "35\n",
              "AVEC2013/Labels/310_3_Depression.csv": "0\n",
              "Testing/DepressionLabels/999_1_Depression.csv": "5\n",  # no video: reported
              "Training/Features/203_1_Freeform_video_LGBP.csv": "0.5,0.7\n"}  # ignored
    for rel in layout:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / rel)
    for rel, text in labels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "README.txt").write_text("AVEC")


def test_convert_avec(tmp_path, good_video_src, capsys):
    root = tmp_path / "AVEC2014"
    build_avec_tree(root, good_video_src)
    site = tmp_path / "site"
    res = convert_avec(root, site, split_from_partition=True)
    assert res.videos == 5 and res.subjects == 3
    assert res.unlabelled == ["Testing/Freeform/236_1_Freeform_video.mp4"]
    assert res.orphan_labels == ["999_1"]
    with open(site / "manifest.csv") as f:
        rows = {r["video"]: r for r in csv.DictReader(f)}
    r = rows["videos/203_1_Northwind_video.mp4"]
    assert (r["subject"], r["visit"], r["score"], r["task"], r["partition"], r["split"]) == (
        "203", "1", "17", "Northwind", "Training", "train")
    assert rows["videos/205_1_Freeform_video.mp4"]["score"] == "35"
    assert rows["videos/310_3_cut_video.mp4"]["task"] == "cut"
    assert (site / "videos/203_1_Freeform_video.mp4").is_symlink()
    info = json.loads((site / "site.json").read_text())
    assert info["scale"] == "BDI-II" and info["score_max"] == 63
    # the result is a valid site (BDI-II 35 is in range because score_max comes from site.json)
    chk = check_site(site, cfg=PrepareConfig(detector="none"))
    assert chk.ok, [str(p) for p in chk.problems]
    assert chk.summary["scale_max"] == 63
    # the CLI, copying files
    assert main(["avec", str(root), str(tmp_path / "site2"), "--mode", "copy"]) == 0
    out = capsys.readouterr().out
    assert "236_1_Freeform_video.mp4: no label file for this recording; left out" in out
    assert not (tmp_path / "site2/videos/203_1_Freeform_video.mp4").is_symlink()
