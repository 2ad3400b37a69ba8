"""Bounded influence of one site: the pure math of strategies.robust (NumPy only)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from strategies.robust import (
    RobustConfig,
    clip_update,
    norm_bound,
    robust_config,
    trim_count,
    trimmed_counts,
    trimmed_flag_threshold,
    trimmed_mean,
    update_norm,
    update_of,
)

pytestmark = pytest.mark.timeout(30)


def honest_updates(seed: int = 0, sites: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"a.weight": rng.normal(0, 0.01, (6, 5)), "a.bias": rng.normal(0, 0.01, 5)} for _ in range(sites)]


def test_update_norm_is_the_l2_norm_over_every_array() -> None:
    update = {"x": np.array([3.0, 0.0]), "y": np.array([[0.0], [4.0]], dtype=np.float32)}
    assert update_norm(update) == 5.0
    reply = {"x": np.array([1.0, 1.0], np.float32), "n": np.array([7], np.int64)}
    glob = {"x": np.array([0.5, 2.0], np.float32), "n": np.array([3], np.int64)}
    assert list(update_of(reply, glob)) == ["x"]  # integer arrays take no part
    np.testing.assert_array_equal(update_of(reply, glob)["x"], [0.5, -1.0])


def test_a_x100_update_is_bounded_to_the_median_bound_and_keeps_its_direction() -> None:
    updates = honest_updates()
    updates[2] = {k: 100 * v for k, v in updates[2].items()}
    norms = [update_norm(u) for u in updates]
    bound = norm_bound(norms, "median", 2.0)
    assert bound == pytest.approx(2.0 * float(np.median(norms)))
    assert norms[2] > 40 * bound  # the attacker is far outside
    clipped, scale = clip_update(updates[2], bound)
    assert scale == pytest.approx(bound / norms[2])
    assert update_norm(clipped) == pytest.approx(bound, rel=1e-12)
    for name in clipped:  # same direction
        np.testing.assert_allclose(clipped[name], updates[2][name] * scale)
    for honest in (0, 1, 3):  # honest sites are within 2 x the median: untouched, bit for bit
        same, one = clip_update(updates[honest], bound)
        assert one == 1.0 and all(same[k] is updates[honest][k] or np.array_equal(same[k], updates[honest][k])
                                  for k in same)


def test_fixed_bound_and_default_factor() -> None:
    assert norm_bound([1.0, 50.0, 2.0], "fixed", 0.5) == 0.5
    assert norm_bound([1.0, 3.0, 2.0, 100.0], "median") == 2.0 * 2.5  # default factor 2 x median
    assert norm_bound([], "median", 2.0) == math.inf
    clipped, scale = clip_update({"x": np.array([30.0, 40.0])}, 5.0)
    np.testing.assert_allclose(clipped["x"], [3.0, 4.0])
    assert scale == pytest.approx(0.1)
    with pytest.raises(ValueError):
        norm_bound([1.0], "mean")


@pytest.mark.parametrize(("sites", "trim"), [(4, 0.25), (5, 0.2), (7, 0.3), (10, 0.1), (4, 0.49)])
def test_trimmed_mean_equals_scipy_reference(sites: int, trim: float) -> None:
    values = np.random.default_rng(sites).normal(size=(sites, 3, 4))
    k = trim_count(sites, trim)
    assert k == min(math.floor(trim * sites), (sites - 1) // 2)
    expected = stats.trim_mean(values, k / sites, axis=0)  # scipy cuts int(proportion * n) per side
    np.testing.assert_allclose(trimmed_mean(values, trim), expected, rtol=1e-12, atol=1e-15)
    # and against an explicit loop
    loop = np.array([np.mean(sorted(values[:, i, j])[k: sites - k]) for i in range(3) for j in range(4)])
    np.testing.assert_allclose(trimmed_mean(values, trim).ravel(), loop, rtol=1e-12)


def test_trimmed_mean_drops_the_x100_site_at_almost_every_coordinate() -> None:
    rows = np.stack([np.concatenate([u[k].ravel() for k in sorted(u)]) for u in honest_updates(sites=4)])
    rows[1] *= 100
    counts = trimmed_counts(rows, 0.25)
    assert counts.sum() == 2 * rows.shape[1]  # k=1 per side, every coordinate
    fraction = counts / rows.shape[1]
    threshold = trimmed_flag_threshold(4, 0.25)
    assert threshold == 0.75 and fraction[1] > 0.9 > threshold
    assert all(fraction[i] < threshold for i in (0, 2, 3))
    assert np.abs(trimmed_mean(rows, 0.25)).max() < np.abs(rows[[0, 2, 3]]).max()  # attacker's values gone
    assert trimmed_flag_threshold(4, 0.0) == math.inf and not trimmed_counts(rows, 0.0).any()


def test_everything_is_independent_of_the_order_of_the_sites() -> None:
    updates = honest_updates(seed=3, sites=5)
    updates[4] = {k: 100 * v for k, v in updates[4].items()}
    stack = np.stack([u["a.weight"] for u in updates])
    base_norms = [update_norm(u) for u in updates]
    base_bound = norm_bound(base_norms, "median", 1.5)
    base_mean = trimmed_mean(stack, 0.2)
    base_counts = trimmed_counts(stack, 0.2)
    for perm in itertools.permutations(range(5)):
        perm = list(perm)
        norms = [update_norm(updates[i]) for i in perm]
        assert norm_bound(norms, "median", 1.5) == base_bound
        np.testing.assert_array_equal(trimmed_mean(stack[perm], 0.2), base_mean)  # bit for bit
        np.testing.assert_array_equal(trimmed_counts(stack[perm], 0.2), base_counts[perm])


def test_config_is_checked() -> None:
    assert robust_config("", None, 0.0) is None and robust_config(None) is None
    assert robust_config("MEDIAN") == RobustConfig("median", None, 0.0)
    assert RobustConfig("median").factor == 2.0 and RobustConfig("median", 3.0).factor == 3.0
    assert robust_config("", None, 0.25) == RobustConfig("", None, 0.25)  # trimmed mean alone
    with pytest.raises(ValueError, match="needs strategy.robust_bound"):
        RobustConfig("fixed")
    with pytest.raises(ValueError, match="one of"):
        RobustConfig("mean")
    with pytest.raises(ValueError, match="robust_trim"):
        RobustConfig("median", trim=0.5)
    with pytest.raises(ValueError, match="positive"):
        RobustConfig("fixed", bound=-1.0)
