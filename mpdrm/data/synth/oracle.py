"""The oracle: the error floor of a predictor that knows the truth behind every video.

Generative chain per visit: latent severity ``z`` -> dynamics ``u = base + slope*z +
confound*B@h`` (mpdrm.data.synth.model) -> rendered video; and independently the clinical
score ``score = clip(round(score_max*z + N(0, rater_sd)), 0, score_max)`` (rater noise:
the score is a noisy measurement of the state the face shows).

**Habit-aware oracle** (the floor; ``oracle.json`` top-level ``rmse``/``mae``): it knows each
visit's dynamics parameters and the subject's habits, so it removes the habit term and
inverts the linear map by least squares over the channels with a severity slope,
``z_hat = slope . (u - base - confound*B@h) / |slope|^2`` (exact: the recorded
``inversion_max_abs_error`` is ~1e-15). What remains is the rater noise, which no predictor
can know; the best predictions given ``z`` are then the conditional mean of the clipped,
rounded Gaussian score (optimal for squared error, used for RMSE) and its conditional median
(optimal for absolute error, used for MAE).

**Habit-blind oracle** (for reference): it knows the dynamics but not who the person is, so
the habit term is noise with covariance ``confound^2 B B^T``; ``z_hat`` is the linear-Gaussian
posterior mean (generalised least squares with the cohort's severity mean/variance as prior),
then mapped through the same conditional mean/median. Its gap to the habit-aware oracle is
what knowing the person is worth at this ``confound`` - the paper's premise in one number.

**Constant predictor**: the cohort's mean score (RMSE) / median score (MAE), the trivial
baseline. A useful model lands between this and the oracle.

Errors are reported on the raw scale (points) and normalised (divided by ``score_max``).
The oracle knows the video's *parameters*, not just its pixels: a model that sees a few
seconds of video also faces the sampling noise of smiles and blinks, so its real floor is
higher.
"""
from __future__ import annotations

import math

import numpy as np

from .model import CHANNELS, HABITS, habit_matrix, slope_vector


DEFINITION = (
    "rmse/mae: error of the best predictor that knows each visit's dynamics parameters and "
    "the subject's habits: it removes the habit term, inverts the linear channel map by least "
    "squares (exact), and predicts the conditional mean (for RMSE) / median (for MAE) of the "
    "clipped, rounded score given the severity; only the rater noise remains. habit_blind: "
    "same without knowing the habits (GLS posterior mean with the habit term as noise). "
    "constant: the cohort's mean/median score. raw = scale points; normalised = raw/score_max.")


def _score_distribution(mu: float, sd: float, score_max: int) -> np.ndarray:
    """P(score = k | z) for k = 0..score_max: clipped, rounded Gaussian."""
    k = np.arange(score_max + 1, dtype=np.float64)
    if sd <= 0:
        p = np.zeros(score_max + 1)
        p[int(min(max(round(mu), 0), score_max))] = 1.0
        return p
    cdf = np.vectorize(lambda x: 0.5 * (1 + math.erf(x / (sd * math.sqrt(2)))))
    upper = cdf(k + 0.5 - mu)
    lower = cdf(k - 0.5 - mu)
    upper[-1] = 1.0
    lower[0] = 0.0
    p = np.clip(upper - lower, 0, None)
    return p / p.sum()


def best_predictions(z: float, score_max: int, rater_sd: float) -> tuple[float, float, float]:
    """(conditional mean, conditional median, conditional variance) of the score given z."""
    p = _score_distribution(score_max * z, rater_sd, score_max)
    k = np.arange(score_max + 1)
    mean = float((p * k).sum())
    median = float(k[np.searchsorted(np.cumsum(p), 0.5)])
    var = float((p * (k - mean) ** 2).sum())
    return mean, median, var


def unit_vector(dynamics: dict[str, float]) -> np.ndarray:
    return np.array([c.unit_value(dynamics[c.name]) for c in CHANNELS])


def invert_with_habits(dynamics: dict[str, float], habits: dict[str, float],
                       confound: float) -> float:
    a = slope_vector()
    base = np.array([c.base for c in CHANNELS])
    h = np.array([habits[k] for k in HABITS])
    resid = unit_vector(dynamics) - base - confound * habit_matrix() @ h
    return float(a @ resid / (a @ a))


def invert_blind(dynamics: dict[str, float], confound: float, prior_mean: float,
                 prior_var: float) -> float:
    a = slope_vector()
    base = np.array([c.base for c in CHANNELS])
    b = habit_matrix()
    cov = confound ** 2 * b @ b.T + 1e-9 * np.eye(len(CHANNELS))
    ci = np.linalg.inv(cov)
    y = unit_vector(dynamics) - base
    precision = a @ ci @ a + 1.0 / prior_var
    z = (a @ ci @ y + prior_mean / prior_var) / precision
    return float(np.clip(z, 0.0, 1.0))


def _errors(pred_mean: np.ndarray, pred_median: np.ndarray, scores: np.ndarray,
            score_max: float) -> dict:
    rmse = float(np.sqrt(np.mean((pred_mean - scores) ** 2)))
    mae = float(np.mean(np.abs(pred_median - scores)))
    return {"raw": {"rmse": round(rmse, 4), "mae": round(mae, 4)},
            "normalised": {"rmse": round(rmse / score_max, 5), "mae": round(mae / score_max, 5)}}


def compute_oracle(visits: list[dict], *, score_max: int, rater_sd: float,
                   confound: float) -> dict:
    """``visits``: dicts with site, subject, severity, score, dynamics, habits."""
    zs = np.array([v["severity"] for v in visits])
    prior_mean, prior_var = float(zs.mean()), float(max(zs.var(), 1e-4))
    scores = np.array([v["score"] for v in visits], np.float64)
    aware_mean, aware_med, blind_mean, blind_med, exp_var, inv_err = [], [], [], [], [], []
    for v in visits:
        z_hat = invert_with_habits(v["dynamics"], v["habits"], confound)
        inv_err.append(abs(z_hat - v["severity"]))
        m, med, var = best_predictions(z_hat, score_max, rater_sd)
        aware_mean.append(m)
        aware_med.append(med)
        exp_var.append(var)
        zb = invert_blind(v["dynamics"], confound, prior_mean, prior_var)
        mb, medb, _ = best_predictions(zb, score_max, rater_sd)
        blind_mean.append(mb)
        blind_med.append(medb)
        v["oracle_score"] = round(m, 4)
        v["habit_blind_score"] = round(mb, 4)
    aware_mean, aware_med = np.array(aware_mean), np.array(aware_med)
    blind_mean, blind_med = np.array(blind_mean), np.array(blind_med)
    out = {"definition": DEFINITION,
           "score_max": score_max, "rater_sd": rater_sd, "confound": confound,
           "visits_n": len(visits)}
    out.update(_errors(aware_mean, aware_med, scores, score_max))
    out["expected_raw_rmse"] = round(float(np.sqrt(np.mean(exp_var))), 4)
    out["inversion_max_abs_error"] = float(max(inv_err))
    out["habit_blind"] = _errors(blind_mean, blind_med, scores, score_max)
    const_mean = np.full_like(scores, scores.mean())
    const_med = np.full_like(scores, float(np.median(scores)))
    out["constant"] = _errors(const_mean, const_med, scores, score_max)
    per_site = {}
    sites = sorted({v["site"] for v in visits})
    for s in sites:
        idx = np.array([v["site"] == s for v in visits])
        per_site[s] = _errors(aware_mean[idx], aware_med[idx], scores[idx], score_max)
        per_site[s]["visits_n"] = int(idx.sum())
    out["per_site"] = per_site
    return out
