"""Site calibration (mpdrm.calibration): the offset, how evaluation applies it, when it is off."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.calibration import check_calibration, fit_site_offset, site_offset, training_personality
from mpdrm.training import evaluate, predict


def test_each_video_counts_once_whatever_its_clips():
    video = np.array([0] * 10 + [1])
    target = np.array([0.5] * 10 + [0.2], np.float32)
    prediction = np.array([0.4] * 10 + [0.5], np.float32)  # video 0: +0.1 short, video 1: 0.3 over
    assert site_offset(prediction, target, video) == pytest.approx((0.1 - 0.3) / 2)
    with pytest.raises(ValueError, match="no training clips"):
        site_offset(np.zeros(0), np.zeros(0), np.zeros(0, int))


def test_unknown_calibration_is_refused_and_known_people_use_their_mean_p():
    assert check_calibration("offset") == "offset"
    with pytest.raises(ValueError, match="eval.calibration must be one of"):
        check_calibration("affine")
    assert training_personality("clip") == "clip"
    assert training_personality("reference") == training_personality("subject_mean") == "subject_mean"


def test_evaluate_shifts_every_score_by_the_offset(brightness_dataset):
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)
    loader = DataLoader(brightness_dataset(n=16), batch_size=8)
    out = predict(model, loader)
    b = fit_site_offset(model, loader)
    assert b == pytest.approx(site_offset(out["prediction"], out["target"], out["video"]), abs=1e-7)
    plain, shifted = evaluate(model, loader), evaluate(model, loader, offset=b)
    videos = np.unique(out["video"])
    pred = np.array([out["prediction"][out["video"] == v].mean() for v in videos]) + b
    target = np.array([out["target"][out["video"] == v].mean() for v in videos])
    assert shifted["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - target) ** 2))), abs=1e-6)
    assert shifted["mean_error"] == pytest.approx(0.0, abs=1e-6)  # fitted on these very videos
    assert abs(plain["mean_error"]) > 1e-3 and shifted["pcc"] == pytest.approx(plain["pcc"], abs=1e-6)


def test_a_site_fits_no_offset_when_calibration_is_off_for_classes_or_without_training_clips(brightness_dataset):
    from types import SimpleNamespace

    from mpdrm.contract.site_data import calibration_offset

    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)
    cfg = {"eval.calibration": "offset", "data.task": "regression", "data.eval_batch_size": 8, "data.workers": 0,
           "eval.personality": "auto", "eval.protocol": "subjects"}
    data = SimpleNamespace(train=brightness_dataset(n=8))
    assert calibration_offset(model, data, cfg) == pytest.approx(fit_site_offset(model, DataLoader(data.train, batch_size=8)))
    assert calibration_offset(model, data, {**cfg, "eval.calibration": "none"}) is None
    assert calibration_offset(model, data, {**cfg, "data.task": "classification"}) is None
    assert calibration_offset(model, SimpleNamespace(train=[]), cfg) is None
    with pytest.raises(ValueError, match="eval.calibration must be one of"):
        calibration_offset(model, data, {**cfg, "eval.calibration": "Offset"})
