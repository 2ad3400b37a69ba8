"""After a (tiny, in-process) federated run every site holds its personalised model and
scores visits with it exactly as the run's final evaluation did."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mpdrm import tensorfile
from mpdrm.contract.runconfig import merged
from mpdrm.contract.sharing import build_site_model, run_shared_names
from mpdrm.contract.site_data import eval_loader, site_data
from mpdrm.inference import load_model_dir
from mpdrm.inference.cli import export_main
from mpdrm.inference.export import read_global, read_local
from mpdrm.inference.modeldir import ENROLLED_FILE, SUBJECTS_FILE, WEIGHTS_FILE
from mpdrm.metrics import video_level
from mpdrm.training import predict

SITE_NAMES = ("site-01", "site-02")


def _data(run, site: str):
    return site_data(run.site_dir(site).resolve(), merged(run.cfg))


def _video_clips(data, video_index: int) -> np.ndarray:
    """The cached clips of one test video, in dataset order."""
    idx = [i for i in range(len(data.test)) if data.test.video_ids[i] == video_index]
    return np.stack([data.test.clip(i) for i in idx])


def _test_videos(data) -> list[int]:
    return sorted(set(int(v) for v in data.test.video_ids))


@pytest.mark.parametrize("site", SITE_NAMES)
def test_each_site_keeps_its_model_and_scores_like_the_final_evaluation(tiny_run, site: str) -> None:
    model_dir = tiny_run.state_dir(site) / "model"
    assert (model_dir / "model.json").is_file(), "the run left no model directory at the site"
    sm = load_model_dir(model_dir)
    assert sm.meta["round"] == tiny_run.summary["rounds"][-1]["round"] and sm.meta["run_id"] == 1
    assert sm.meta["personality"] == "clip" and sm.prepare.detector in ("haar", "none")
    data = _data(tiny_run, site)
    cfg = merged(tiny_run.cfg)
    ref = predict(sm.model, eval_loader(data.test, cfg), personality="clip")
    # the site's calibration offset (eval.calibration=offset, the default) is served as evaluated
    offset = tiny_run.summary["final"]["per_site"][site]["calibration_offset"]
    assert sm.calibration_offset == pytest.approx(offset, abs=1e-7) and offset != 0
    want, target = video_level(ref["prediction"] + offset, ref["target"], ref["video"], "regression")
    got = np.array([sm.score_clips(_video_clips(data, v)).prediction.astype(np.float64).mean()
                    for v in _test_videos(data)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    rmse = float(np.sqrt(np.mean((got - target) ** 2)))
    assert rmse == pytest.approx(tiny_run.summary["final"]["per_site"][site]["rmse"], abs=1e-5)
    # from the file: the same OpenCV pipeline gives the same clips, hence the same score
    first = data.videos[_test_videos(data)[0]]
    row = sm.score_video(tiny_run.site_dir(site) / first["video"])
    assert row.normalised == pytest.approx(got[0], abs=1e-6)
    assert row.score == pytest.approx(got[0] * data.score_max, abs=1e-4)
    assert row.clips == len(_video_clips(data, first["video_index"]))


@pytest.mark.parametrize("site", SITE_NAMES)
def test_the_directory_holds_this_site_only_and_equals_the_export(tiny_run, site: str, tmp_path: Path) -> None:
    from client.state import SiteStateStore
    from server.checkpoint import load_checkpoint
    from tests.federation.sim_helpers import node_context

    model_dir = tiny_run.state_dir(site) / "model"
    meta = json.loads((model_dir / "model.json").read_text())
    data = _data(tiny_run, site)
    subjects = tensorfile.load(model_dir / SUBJECTS_FILE)
    assert meta["subjects"] == subjects["ids"] == list(data.subject_ids)
    assert not set(meta["subjects"]) & set(data.test_subject_ids), "held-out subjects are not training subjects"
    # weights: exactly the global shared (checkpoint) + this site's local (its state)
    server_round, shared = read_global(tiny_run.run_dir)
    assert server_round == meta["round"]
    _, local = read_local(tiny_run.state_dir(site), server_round)
    # ... read as the coordinator's and the site's own loaders read them
    ckpt = load_checkpoint(tiny_run.run_dir)
    state = SiteStateStore(tiny_run.state_dir(site), node_context(0, 2)).load(ckpt.round + 1)
    assert ckpt.round == server_round and set(ckpt.arrays) == set(shared) and set(state["local"]) == set(local)
    assert all(np.array_equal(ckpt.arrays[k], shared[k].numpy()) for k in shared)
    assert all(torch.equal(state["local"][k], local[k]) for k in local)
    weights = tensorfile.load(model_dir / WEIGHTS_FILE)
    assert set(weights) == set(shared) | set(local) and not set(shared) & set(local)
    for name, value in {**shared, **local}.items():
        assert torch.equal(weights[name], value), name
    model = build_site_model(tiny_run.cfg, data.num_subjects)
    assert set(shared) == set(run_shared_names(model, merged(tiny_run.cfg)))
    assert all(name.startswith("personality.") for name in local)
    # mpdrm-export from checkpoint + state gives the same directory, byte for byte
    out = tmp_path / "export"
    assert export_main([str(tiny_run.run_dir), "--state-dir", str(tiny_run.state_dir(site)), "--site-dir",
                        str(tiny_run.site_dir(site)), "--out", str(out), "--run-id", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    # model.json (content hashes of both files included) byte for byte, the tensor files by content
    assert (out / "model.json").read_bytes() == (model_dir / "model.json").read_bytes()
    for name in (WEIGHTS_FILE, SUBJECTS_FILE):
        _assert_same_tree(tensorfile.load(out / name), tensorfile.load(model_dir / name))


def _assert_same_tree(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same_tree(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def test_enrolment_changes_the_enrolled_subject_only_and_is_reproducible(tiny_run, tmp_path: Path) -> None:
    site = SITE_NAMES[0]
    data = _data(tiny_run, site)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_run.state_dir(site) / "model", a)
    shutil.copytree(tiny_run.state_dir(site) / "model", b)
    weights_before = (a / WEIGHTS_FILE).read_bytes()
    sm = load_model_dir(a)
    patient = data.test_subject_ids[0]
    visit = next(v for v in data.videos if v["subject"] == patient)
    video = tiny_run.site_dir(site) / visit["video"]
    trained = data.subject_ids[0]
    before = {"clip": sm.score_video(video).normalised, "trained": sm.score_video(video, trained).normalised}
    with pytest.raises(KeyError, match=patient):
        sm.reference(patient)
    record = sm.enroll(patient, video, score=visit["score"])
    assert record["num_clips"] > 0 and record["score"] == visit["score"]
    after = load_model_dir(a)          # from the files
    assert after.score_video(video).normalised == before["clip"]
    assert after.score_video(video, trained).normalised == before["trained"]
    enrolled = after.score_video(video, patient)
    assert enrolled.personality.startswith(f"subject {patient} (enrolled")
    assert enrolled.normalised != pytest.approx(before["clip"], abs=1e-7)
    assert (a / WEIGHTS_FILE).read_bytes() == weights_before
    # reproducible: the same visit in another copy gives the same reference, bit for bit
    load_model_dir(b).enroll(patient, video, score=visit["score"])
    ra, rb = tensorfile.load(a / ENROLLED_FILE)["subjects"], tensorfile.load(b / ENROLLED_FILE)["subjects"]
    assert torch.equal(ra[patient]["reference"], rb[patient]["reference"])
    _assert_same_tree(ra, rb)


def test_references_from_all_test_clips_give_the_subject_mean_evaluation(tiny_run, tmp_path: Path) -> None:
    """Enrolling each held-out subject from all its test clips reproduces ``personality='subject_mean'``."""
    site = SITE_NAMES[1]
    data = _data(tiny_run, site)
    shutil.copytree(tiny_run.state_dir(site) / "model", tmp_path / "m")
    sm = load_model_dir(tmp_path / "m")
    ref = predict(sm.model, eval_loader(data.test, merged(tiny_run.cfg)), personality="subject_mean")
    want, _ = video_level(ref["prediction"] + sm.calibration_offset, ref["target"], ref["video"], "regression")
    for j, patient in enumerate(data.test_subject_ids):
        index = data.num_subjects + j
        clips = np.stack([data.test.clip(i) for i in range(len(data.test)) if data.test.subjects[i] == index])
        sm.enroll_clips(patient, clips)
    by_video = {v["video_index"]: v["subject"] for v in data.videos}
    got = [sm.score_clips(_video_clips(data, v), by_video[v]).prediction.astype(np.float64).mean()
           for v in _test_videos(data)]
    np.testing.assert_allclose(got, want, atol=1e-5)
