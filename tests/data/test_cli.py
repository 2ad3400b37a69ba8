"""The `mpdrm-data` console script end to end, as a user runs it (a few real subprocess
calls; the rest in-process through the same `main`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mpdrm.data.cli import main


def run(*args):
    exe = shutil.which("mpdrm-data", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "mpdrm.data.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300)


def test_synth_check_prepare(tmp_path, capsys):
    out = tmp_path / "cohort"
    r = run("synth", str(out), "--sites", "2", "--subjects", "2", "--visits", "2",
            "--seconds", "2.5", "--seed", "5", "--confound", "0.5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "2 sites x 2 subjects x 2 visits = 8 videos" in r.stdout and "oracle RMSE" in r.stdout
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["params"]["confound"] == 0.5
    r = run("prepare", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "site-02: 4/4 videos usable" in r.stdout
    assert "prepare site-01" in r.stderr          # tqdm progress bar over videos
    report = json.loads((out / "site-01/.mpdrm-cache/report.json").read_text())
    assert report["totals"]["ok"] == 4 and report["params"]["detector"] == "none"

    assert main(["check", str(out / "site-01")]) == 0
    assert capsys.readouterr().out.startswith("OK site-01: 2 subjects, 4 visits, 4 videos")
    assert main(["check", str(out)]) == 0         # a cohort folder: every site
    assert capsys.readouterr().out.count("OK site-0") == 2
    # break one video: check fails with exactly one line, prepare keeps the rest
    (out / "site-01/videos/S01-01_v1.mp4").write_bytes(b"")
    assert main(["check", str(out / "site-01")]) == 1
    assert capsys.readouterr().out.strip() == (
        f"{out}/site-01/manifest.csv:2: videos/S01-01_v1.mp4: zero-byte file (0 bytes)")
    assert main(["prepare", str(out / "site-01"), "--quiet"]) == 0
    assert "3/4 videos usable" in capsys.readouterr().out


def test_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("synth", "check", "prepare", "avec"))
