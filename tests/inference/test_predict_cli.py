"""mpdrm-predict and mpdrm-enroll on real files through the Haar path: good and bad inputs
in one call, per-file errors naming the file, exit status."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpdrm.inference import load_model_dir
from mpdrm.inference.cli import enroll_main, predict_main
from tests.inference.helpers import astronaut_video, faceless_video, haar_model_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    return {"model": haar_model_dir(root / "model"), "good": astronaut_video(root / "astronaut.mp4"),
            "short": astronaut_video(root / "short.mp4", n=12), "noface": faceless_video(root / "noface.mp4"),
            "text": text, "missing": root / "missing.mp4", "root": root}


def test_a_real_face_video_is_scored_through_the_haar_path(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.json"
    assert predict_main([str(files["model"]), str(files["good"]), "--json", str(out), "--no-progress"]) == 0
    [row] = json.loads(out.read_text())
    assert row["error"] is None and row["clips"] >= 1 and row["face_rate"] >= 0.8
    assert row["score"] == pytest.approx(row["normalised"] * 27.0)      # untrained weights: any value
    assert row["low"] - 1e-9 <= row["score"] <= row["high"] + 1e-9
    assert "each clip's own personality embedding" in row["warnings"] and row["personality"] == "clip"
    printed = capsys.readouterr().out
    assert str(files["good"]) in printed and "personality: clip" in printed


def test_bad_inputs_are_named_and_a_good_file_is_still_scored(files, tmp_path: Path, capsys) -> None:
    names = ["missing", "text", "noface", "short", "good"]
    out = tmp_path / "rows.csv"
    assert predict_main([str(files["model"]), *(str(files[n]) for n in names), "--csv", str(out),
                         "--no-progress"]) == 0
    rows = {Path(r["video"]).name: r for r in csv.DictReader(out.open())}
    assert rows["astronaut.mp4"]["error"] == "" and float(rows["astronaut.mp4"]["clips"]) >= 1
    expected = {"missing.mp4": "file not found", "notes.mp4": "not", "noface.mp4": "no face",
                "short.mp4": "too short"}
    err = capsys.readouterr().err
    for name, why in expected.items():
        assert rows[name]["error"].startswith(str(files["root"] / name)), rows[name]
        assert why in rows[name]["error"], rows[name]["error"]
        assert str(files["root"] / name) in err


def test_exit_status_is_non_zero_when_nothing_could_be_scored(files, capsys) -> None:
    assert predict_main([str(files["model"]), str(files["missing"]), str(files["text"]), "--no-progress"]) == 1
    assert predict_main([str(files["root"] / "nowhere"), str(files["good"])]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_enrol_then_predict_with_the_subject(files, tmp_path: Path, capsys) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files["model"], model)
    before = load_model_dir(model).score_video(files["good"])
    assert predict_main([str(model), str(files["good"]), "--subject", "P7", "--no-progress"]) == 1  # unknown patient
    assert "mpdrm-enroll" in capsys.readouterr().err
    assert enroll_main([str(model), str(files["good"]), "--subject", "P7", "--score", "12"]) == 0
    assert "enrolled P7" in capsys.readouterr().out
    out = tmp_path / "rows.json"
    assert predict_main([str(model), str(files["good"]), "--subject", "P7", "--json", str(out), "--no-progress"]) == 0
    [row] = json.loads(out.read_text())
    assert row["personality"] == "subject P7 (enrolled)" and row["score"] != pytest.approx(before.score, abs=1e-9)
    assert json.loads((model / "enrolled.json").read_text())["subjects"]["P7"]["score"] == 12.0
    # a training subject of the site uses its stored reference
    assert predict_main([str(model), str(files["good"]), "--subject", "A", "--no-progress"]) == 0
    assert "subject A (training)" in capsys.readouterr().out


def test_console_script_runs(files) -> None:
    done = subprocess.run([sys.executable, "-c", "from mpdrm.inference.cli import predict_main; raise SystemExit(predict_main())",
                           str(files["model"]), str(files["good"]), "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "astronaut.mp4" in done.stdout and "score" in done.stdout


def test_an_altered_model_directory_is_refused_naming_the_file(files, tmp_path: Path) -> None:
    import shutil

    from mpdrm import tensorfile
    from mpdrm.inference import ModelDirError

    model = tmp_path / "model"
    shutil.copytree(files["model"], model)
    weights = tensorfile.load(model / "weights.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    tensorfile.save(model / "weights.safetensors", weights)      # a valid file, other content
    with pytest.raises(ModelDirError, match="weights.safetensors: content differs"):
        load_model_dir(model)
