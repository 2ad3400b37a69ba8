"""``load_site`` reads what ``prepare_site`` wrote and never prepares: unprepared, stale or
damaged sites fail with a message naming the folder (or file) and the command to run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mpdrm.data.cache as cache_mod
import mpdrm.data.prepare as prepare_mod
from mpdrm.data import PrepareConfig, load_site, prepare_site
from mpdrm.data.cache import CacheError, NotPreparedError, cache_root
from mpdrm.data.dataset import prepare_command


@pytest.fixture()
def site(tmp_path: Path, tiny_cohort: Path) -> Path:
    """A private copy of a synthetic site, prepared with the default parameters."""
    dst = tmp_path / "site-01"
    shutil.copytree(tiny_cohort / "site-01", dst, ignore=shutil.ignore_patterns(".mpdrm-cache"))
    prepare_site(dst, progress=False)
    return dst


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_unprepared_site_names_folder_and_command(tmp_path: Path, tiny_cohort: Path) -> None:
    dst = tmp_path / "fresh"
    shutil.copytree(tiny_cohort / "site-02", dst, ignore=shutil.ignore_patterns(".mpdrm-cache"))
    with pytest.raises(NotPreparedError) as err:
        load_site(dst, score_max=27.0)               # the site's own scale: no --score-max
    msg = str(err.value)
    assert str(dst) in msg and f"`mpdrm-data prepare {dst}`" in msg
    assert "no preparation found" in msg
    assert not cache_root(dst).exists()              # nothing prepared behind our back


def test_prepared_site_loads_without_preparing(site: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(cache_root(site))

    def boom(*args, **kwargs):
        raise AssertionError("load_site must not decode, hash or prepare")
    monkeypatch.setattr(cv2, "VideoCapture", boom)
    monkeypatch.setattr(prepare_mod, "prepare_site", boom)
    monkeypatch.setattr(prepare_mod, "process_video", boom)
    monkeypatch.setattr(cache_mod, "file_sha256", boom)
    data = load_site(site, seed=0)
    assert len(data.train) == 12 and len(data.test) == 4
    assert _snapshot(cache_root(site)) == before     # report.json etc. not rewritten
    assert isinstance(data.train._arrays[0], np.memmap)  # opened, memory-mapped
    assert data.train[0]["clips"].shape == (1, 16, 64, 64)


def test_other_parameters_than_prepared(site: Path) -> None:
    with pytest.raises(NotPreparedError) as err:
        load_site(site, PrepareConfig(size=32, max_clips=2))
    msg = str(err.value)
    assert str(site) in msg and "size=64 (asked 32)" in msg and "max_clips=None (asked 2)" in msg
    assert f"`mpdrm-data prepare {site} --size 32 --max-clips 2`" in msg
    prepare_site(site, PrepareConfig(size=32, max_clips=2), progress=False)
    assert load_site(site, PrepareConfig(size=32, max_clips=2)).train[0]["clips"].shape[-1] == 32
    assert load_site(site).train[0]["clips"].shape[-1] == 64   # both preparations kept


def test_score_max_other_than_prepared(site: Path) -> None:
    with pytest.raises(NotPreparedError, match=r"score_max 27, not 63.*--score-max 63"):
        load_site(site, score_max=63)
    assert load_site(site, score_max=27).score_max == 27


def test_changed_video_or_manifest_is_detected(site: Path) -> None:
    video = sorted((site / "videos").iterdir())[0]
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(NotPreparedError) as err:
        load_site(site)
    assert f"videos/{video.name}" in str(err.value) and "changed since it was prepared" in str(err.value)
    assert f"`mpdrm-data prepare {site}`" in str(err.value)
    prepare_site(site, progress=False)
    load_site(site)
    with open(site / "manifest.csv", "a") as f:
        f.write("\n")
    with pytest.raises(NotPreparedError, match="manifest.csv"):
        load_site(site)


def test_truncated_or_missing_cache_file_is_named(site: Path) -> None:
    prep = prepare_site(site, progress=False)
    path = prep.clips_path(prep.ok[0])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CacheError) as err:
        load_site(site)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    assert f"mpdrm-data prepare {site}" in str(err.value)
    again = prepare_site(site, progress=False)        # a damaged entry is recomputed
    assert again.cache_misses == 1
    load_site(site)
    path.unlink()
    with pytest.raises(CacheError, match=f"{path}: clip cache file is missing"):
        load_site(site)


def test_unreadable_index_is_named(site: Path) -> None:
    prep = prepare_site(site, progress=False)
    index = prep.cache_dir / "index.json"
    index.write_text(index.read_text()[:50])
    with pytest.raises(CacheError, match=f"{index}: unreadable cache index"):
        load_site(site)


def test_prepare_command_options() -> None:
    cfg = PrepareConfig(size=32, fps=10.0, grayscale=False, detect_every=3)
    assert prepare_command("/data/s 1", cfg, score_max=63.0) == (
        "mpdrm-data prepare '/data/s 1' --fps 10 --size 32 --detect-every 3 --rgb "
        "--score-max 63")
    assert prepare_command("s") == "mpdrm-data prepare s"
