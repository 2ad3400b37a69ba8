"""Evaluation metrics in numpy (float64); no scikit-learn.

Regression: MAE, RMSE, Pearson r ('pcc'), Lin's concordance correlation coefficient ('ccc',
population moments). Classification: accuracy, macro F1 (over the labels present in the true or
predicted labels, as scikit-learn does), AUC (binary: Mann-Whitney with tie-averaged ranks;
K > 2: one-vs-rest macro average over the classes that have both positives and negatives).
Undefined values (a constant series for r; a single class for AUC) are NaN.

Video level: a video's prediction is the mean of its clips' predictions (regression scores or
class probabilities); its target is its clips' (common) target -- the mean for regression, the
most frequent label for classification.
"""
from __future__ import annotations

from typing import Any

import numpy as np

REGRESSION_METRICS = ("rmse", "mae", "pcc", "ccc")
CLASSIFICATION_METRICS = ("accuracy", "f1", "auc")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _f(x: Any) -> np.ndarray:
    return _np(x).astype(np.float64).reshape(-1)


def mae(pred: Any, target: Any) -> float:
    p, t = _f(pred), _f(target)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def rmse(pred: Any, target: Any) -> float:
    p, t = _f(pred), _f(target)
    return float(np.sqrt(np.mean((p - t) ** 2))) if p.size else float("nan")


def pearson(pred: Any, target: Any) -> float:
    p, t = _f(pred), _f(target)
    if p.size < 2:
        return float("nan")
    pc, tc = p - p.mean(), t - t.mean()
    denom = np.sqrt(np.sum(pc**2) * np.sum(tc**2))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.sum(pc * tc) / denom, -1.0, 1.0))


def ccc(pred: Any, target: Any) -> float:
    """2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))^2), population moments."""
    p, t = _f(pred), _f(target)
    if p.size < 1:
        return float("nan")
    mp, mt = p.mean(), t.mean()
    cov = np.mean((p - mp) * (t - mt))
    denom = p.var() + t.var() + (mp - mt) ** 2
    if denom == 0:
        return float("nan")
    return float(2 * cov / denom)


def accuracy(y_true: Any, y_pred: Any) -> float:
    t, p = _np(y_true).reshape(-1), _np(y_pred).reshape(-1)
    return float(np.mean(t == p)) if t.size else float("nan")


def f1_macro(y_true: Any, y_pred: Any) -> float:
    t, p = _np(y_true).reshape(-1), _np(y_pred).reshape(-1)
    if t.size == 0:
        return float("nan")
    scores = []
    for c in np.union1d(t, p):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def binary_auc(y_true: Any, score: Any) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(tie)."""
    y = _np(y_true).reshape(-1).astype(bool)
    s = _f(score)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def auc(y_true: Any, scores: Any) -> float:
    """scores: (N,) positive-class scores (binary) or (N, K) class probabilities."""
    t = _np(y_true).reshape(-1)
    s = _np(scores).astype(np.float64)
    if s.ndim == 1:
        return binary_auc(t == 1, s)
    if s.shape[1] == 2:
        return binary_auc(t == 1, s[:, 1])
    values = [binary_auc(t == c, s[:, c]) for c in range(s.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def regression_metrics(pred: Any, target: Any) -> dict[str, float]:
    return {"rmse": rmse(pred, target), "mae": mae(pred, target), "pcc": pearson(pred, target),
            "ccc": ccc(pred, target)}


def classification_metrics(probs: Any, target: Any) -> dict[str, float]:
    """probs (N, K) class probabilities (or logits: only argmax and ranks are used)."""
    pr = _np(probs).astype(np.float64)
    t = _np(target).reshape(-1).astype(np.int64)
    pred = pr.argmax(axis=1)
    return {"accuracy": accuracy(t, pred), "f1": f1_macro(t, pred), "auc": auc(t, pr)}


def video_level(values: Any, targets: Any, videos: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate clip predictions to videos: (per-video mean prediction, per-video target),
    videos in ascending id order."""
    v = _np(videos).reshape(-1)
    vals = _np(values).astype(np.float64)
    tg = _np(targets).reshape(-1)
    ids, inverse = np.unique(v, return_inverse=True)
    counts = np.bincount(inverse, minlength=ids.size).astype(np.float64)
    if vals.ndim == 1:
        agg = np.bincount(inverse, weights=vals, minlength=ids.size) / counts
    else:
        agg = np.stack([np.bincount(inverse, weights=vals[:, k], minlength=ids.size) for k in
                        range(vals.shape[1])], axis=1) / counts[:, None]
    if task == "regression":
        tgt = np.bincount(inverse, weights=tg.astype(np.float64), minlength=ids.size) / counts
    else:
        tgt = np.array([np.bincount(tg[inverse == i].astype(np.int64)).argmax() for i in range(ids.size)])
    return agg, tgt


def error_decomposition(pred: Any, target: Any, subjects: Any) -> dict[str, float]:
    """Split the squared error of per-video predictions into a stable per-subject part and the rest.

    With e_v = pred_v - target_v and b_s the mean of e over subject s's videos:

    - ``subject_bias_rmse`` = sqrt(mean_v b_{s(v)}^2): the error a per-person offset would
      remove (what knowing the person can fix);
    - ``within_subject_rmse`` = sqrt(mean_v (e_v - b_{s(v)})^2): visit-to-visit error (per-video
      and rater noise, changes of state the model misses);
    - ``mean_error``: the mean signed error (a shift shared by everyone).

    ``rmse^2 = subject_bias_rmse^2 + within_subject_rmse^2`` exactly.
    """
    e = _f(pred) - _f(target)
    s = _np(subjects).reshape(-1)
    if not e.size:
        return {"subject_bias_rmse": float("nan"), "within_subject_rmse": float("nan"), "mean_error": float("nan")}
    _, inverse = np.unique(s, return_inverse=True)
    bias = (np.bincount(inverse, weights=e) / np.bincount(inverse))[inverse]
    return {"subject_bias_rmse": float(np.sqrt(np.mean(bias ** 2))),
            "within_subject_rmse": float(np.sqrt(np.mean((e - bias) ** 2))),
            "mean_error": float(np.mean(e))}


def video_subjects(subjects: Any, videos: Any) -> np.ndarray:
    """The subject of each video, videos in ascending id order (as :func:`video_level`)."""
    v = _np(videos).reshape(-1)
    _, first = np.unique(v, return_index=True)
    return _np(subjects).reshape(-1)[first]


def clip_and_video_metrics(pred: Any, target: Any, videos: Any, task: str,
                           subjects: Any | None = None) -> dict[str, float]:
    """Video-level metrics under their plain names, clip-level ones prefixed ``clip_``.
    pred: (N,) scores (regression) or (N, K) class probabilities (classification). With the
    clips' ``subjects`` a regression also gets the video-level :func:`error_decomposition`."""
    fn = regression_metrics if task == "regression" else classification_metrics
    out = {}
    vp, vt = video_level(pred, target, videos, task)
    out.update(fn(vp, vt))
    if subjects is not None and task == "regression":
        out.update(error_decomposition(vp, vt, video_subjects(subjects, videos)))
    out.update({f"clip_{k}": v for k, v in fn(pred, target).items()})
    return out
