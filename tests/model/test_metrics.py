"""Metrics against numpy/scipy references and loop definitions."""
import numpy as np
import pytest
import torch
from scipy import stats

from mpdrm import metrics as M
from mpdrm.metrics import clip_and_video_metrics, error_decomposition


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics(seed):
    rng = np.random.default_rng(seed)
    t = rng.random(50)
    p = t + rng.normal(0, 0.2, 50) + 0.1
    assert M.mae(p, t) == pytest.approx(np.mean(np.abs(p - t)))
    assert M.rmse(p, t) == pytest.approx(np.sqrt(np.mean((p - t) ** 2)))
    assert M.pearson(p, t) == pytest.approx(stats.pearsonr(p, t)[0], rel=1e-10)
    sxy = np.mean((p - p.mean()) * (t - t.mean()))
    ccc = 2 * sxy / (np.var(p) + np.var(t) + (p.mean() - t.mean()) ** 2)
    assert M.ccc(p, t) == pytest.approx(ccc, rel=1e-10)
    assert M.ccc(t, t) == pytest.approx(1.0)
    out = M.regression_metrics(torch.tensor(p), torch.tensor(t))
    assert set(out) == {"rmse", "mae", "pcc", "ccc"}
    assert np.isnan(M.pearson(np.ones(5), t[:5]))


def f1_reference(t, p):
    scores = []
    for c in sorted(set(t) | set(p)):
        tp = sum(1 for a, b in zip(t, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p) if a == c and b != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(scores) / len(scores)


def auc_reference(y, s):
    pos = [v for v, c in zip(s, y) if c]
    neg = [v for v, c in zip(s, y) if not c]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 3, 60)
    pr = rng.random((60, 3))
    pr[np.arange(60), t] += 0.4
    pr = np.round(pr / pr.sum(1, keepdims=True), 2)  # rounding makes ties
    pred = pr.argmax(1)
    assert M.accuracy(t, pred) == pytest.approx(np.mean(t == pred))
    assert M.f1_macro(t, pred) == pytest.approx(f1_reference(t.tolist(), pred.tolist()))
    ovr = np.mean([auc_reference((t == c).tolist(), pr[:, c].tolist()) for c in range(3)])
    assert M.auc(t, pr) == pytest.approx(ovr)
    yb = (t == 1).astype(int)
    assert M.auc(yb, pr[:, 1]) == pytest.approx(auc_reference(yb.tolist(), pr[:, 1].tolist()))
    two = np.stack([1 - pr[:, 1], pr[:, 1]], 1)
    assert M.auc(yb, two) == pytest.approx(auc_reference(yb.tolist(), pr[:, 1].tolist()))
    assert M.classification_metrics(pr, t) == pytest.approx(
        {"accuracy": M.accuracy(t, pred), "f1": M.f1_macro(t, pred), "auc": M.auc(t, pr)})
    assert np.isnan(M.binary_auc(np.ones(4), np.arange(4)))


def test_video_level_is_the_mean_of_clips():
    pred = np.array([0.1, 0.3, 0.5, 0.9, 0.7])
    target = np.array([0.2, 0.2, 0.6, 0.6, 0.8])
    video = np.array([3, 3, 1, 1, 7])
    vp, vt = M.video_level(pred, target, video, "regression")
    assert vp.tolist() == pytest.approx([0.7, 0.2, 0.7])
    assert vt.tolist() == pytest.approx([0.6, 0.2, 0.8])
    out = M.clip_and_video_metrics(pred, target, video, "regression")
    assert out["mae"] == pytest.approx(M.mae(vp, vt))
    assert out["clip_mae"] == pytest.approx(M.mae(pred, target))
    assert set(out) == {"rmse", "mae", "pcc", "ccc", "clip_rmse", "clip_mae", "clip_pcc", "clip_ccc"}
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1])
    vp, vt = M.video_level(probs, labels, np.array([0, 0, 1, 1]), "classification")
    assert np.allclose(vp, [[0.55, 0.45], [0.35, 0.65]])
    assert vt.tolist() == [0, 1]
    out = M.clip_and_video_metrics(probs, labels, np.array([0, 0, 1, 1]), "classification")
    assert out["accuracy"] == 1.0 and out["clip_accuracy"] == 0.75


def test_error_decomposition_splits_the_squared_error_by_subject():
    rng = np.random.default_rng(3)
    subjects = np.repeat([4, 7, 9], [2, 3, 4])
    target = rng.uniform(size=subjects.size)
    offsets = {4: 0.2, 7: -0.1, 9: 0.0}
    noise = rng.normal(0, 0.05, subjects.size)
    pred = target + np.array([offsets[s] for s in subjects]) + noise
    parts = error_decomposition(pred, target, subjects)
    e = pred - target
    bias = np.array([e[subjects == s].mean() for s in subjects])  # direct, per video
    assert parts["subject_bias_rmse"] == pytest.approx(np.sqrt(np.mean(bias ** 2)))
    assert parts["within_subject_rmse"] == pytest.approx(np.sqrt(np.mean((e - bias) ** 2)))
    assert parts["subject_bias_rmse"] ** 2 + parts["within_subject_rmse"] ** 2 == pytest.approx(np.mean(e ** 2))
    assert parts["mean_error"] == pytest.approx(e.mean())
    # a pure per-subject offset is all bias
    only_bias = error_decomposition(target + np.array([offsets[s] for s in subjects]), target, subjects)
    assert only_bias["within_subject_rmse"] == pytest.approx(0.0, abs=1e-12)


def test_video_metrics_carry_the_decomposition_when_subjects_are_given():
    videos = np.array([0, 0, 1, 1, 2, 2])
    subjects = np.array([5, 5, 5, 5, 6, 6])
    target = np.array([0.1, 0.1, 0.3, 0.3, 0.5, 0.5])
    pred = np.array([0.2, 0.2, 0.4, 0.4, 0.5, 0.3])
    out = clip_and_video_metrics(pred, target, videos, "regression", subjects=subjects)
    # videos: errors 0.1, 0.1 (subject 5), -0.1 (subject 6): all subject bias
    assert out["subject_bias_rmse"] == pytest.approx(0.1)
    assert out["within_subject_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert "subject_bias_rmse" not in clip_and_video_metrics(pred, target, videos, "regression")
