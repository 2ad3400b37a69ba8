"""Bounded influence of one site: the pure math (NumPy only, no Flower).

A site's *update* is its reply minus the global record it was sent, over the floating
arrays of the shared names. Three steps, each a pure function of its inputs:

- :func:`update_norm`: the L2 norm of one update over all its arrays (float64);
- :func:`norm_bound`: the round's bound, ``factor x median`` of the sites' norms
  (``mode="median"``) or a fixed norm (``mode="fixed"``);
- :func:`clip_scale` / :func:`clip_update`: an update longer than the bound is scaled down
  to it (its direction kept); a shorter one is left exactly as it is;
- :func:`trimmed_mean` (optional): per coordinate, the ``trim`` fraction of the largest and
  of the smallest values across sites is dropped and the rest averaged (unweighted);
  :func:`trimmed_counts` says how often each site was among the dropped values.

Every function is independent of the order of the sites: norms are per site, the median
and the trimmed mean sort their inputs (so even the floating-point sum runs in sorted
order). :class:`RobustConfig` holds the settings (``strategy.robust``,
``strategy.robust_bound``, ``strategy.robust_trim`` of the run config).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: ``strategy.robust`` values: ``""`` (off), ``"median"``, ``"fixed"``.
ROBUST_MODES = ("", "median", "fixed")

#: ``strategy.robust_bound`` when unset under ``median``: twice the round's median norm.
DEFAULT_MEDIAN_FACTOR = 2.0

Update = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RobustConfig:
    """How one site's influence on the aggregate is bounded.

    Parameters
    ----------
    mode : str
        ``"median"``: bound = ``bound x`` the median of the round's update norms;
        ``"fixed"``: bound = ``bound`` (an L2 norm); ``""``: no norm bound (the trimmed
        mean alone, if ``trim > 0``).
    bound : float or None
        The multiplier of the median (default :data:`DEFAULT_MEDIAN_FACTOR`) or the fixed
        norm (required with ``mode="fixed"``).
    trim : float
        Fraction of the sites dropped per side and per coordinate (``0``: plain
        aggregation by the configured aggregator; must be below 0.5).
    """

    mode: str = "median"
    bound: float | None = None
    trim: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ROBUST_MODES:
            raise ValueError(f"strategy.robust={self.mode!r}: one of {list(ROBUST_MODES)} ('' = off)")
        if self.mode == "fixed" and self.bound is None:
            raise ValueError("strategy.robust=fixed needs strategy.robust_bound (the L2 norm of an update)")
        if self.bound is not None and not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"strategy.robust_bound must be a positive number, got {self.bound!r}")
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"strategy.robust_trim must be in [0, 0.5), got {self.trim!r}")
        if not self.mode and self.trim == 0.0:
            raise ValueError("RobustConfig with no bound and no trim does nothing: pass robust=None instead")

    @property
    def factor(self) -> float:
        """The multiplier of the median norm (``mode="median"``)."""
        return DEFAULT_MEDIAN_FACTOR if self.bound is None else float(self.bound)


def robust_config(mode: str | None, bound: float | None = None, trim: float = 0.0) -> RobustConfig | None:
    """The :class:`RobustConfig` of run-config values, or ``None`` when it is off.

    Parameters
    ----------
    mode : str or None
        ``strategy.robust``: ``""``/``None`` (off), ``"median"`` or ``"fixed"``.
    bound : float or None
        ``strategy.robust_bound``.
    trim : float
        ``strategy.robust_trim``.

    Returns
    -------
    RobustConfig or None
        ``None`` when neither a bound nor trimming is asked for.
    """
    mode = (mode or "").strip().lower()
    trim = float(trim or 0.0)
    if not mode and trim == 0.0:
        return None
    return RobustConfig(mode=mode, bound=None if bound is None else float(bound), trim=trim)


def is_float(array: np.ndarray) -> bool:
    """Whether an array takes part in norms, clipping and trimming (floating dtype)."""
    return bool(np.issubdtype(np.asarray(array).dtype, np.floating))


def update_of(reply: Update, global_arrays: Update) -> dict[str, np.ndarray]:
    """``reply - global`` (float64) of every floating array, in ``global_arrays``' order."""
    return {
        name: np.asarray(reply[name], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        for name, ref in global_arrays.items()
        if is_float(ref)
    }


def update_norm(update: Update) -> float:
    """The L2 norm of an update over all its arrays.

    Parameters
    ----------
    update : Mapping[str, np.ndarray]
        Name -> the site's change of that array.

    Returns
    -------
    float
        ``sqrt(sum of squares)`` accumulated in float64, in the mapping's order.
    """
    total = 0.0
    for value in update.values():
        flat = np.asarray(value, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def norm_bound(norms: Sequence[float], mode: str, bound: float | None = None) -> float:
    """The round's bound on one site's update norm.

    Parameters
    ----------
    norms : Sequence[float]
        Every site's update norm this round.
    mode : str
        ``"median"`` (``bound x median(norms)``) or ``"fixed"`` (``bound``).
    bound : float or None
        The multiplier (``None``: :data:`DEFAULT_MEDIAN_FACTOR`) or the fixed norm.

    Returns
    -------
    float
        The bound (``inf`` for an empty round under ``median``).
    """
    if mode == "fixed":
        if bound is None:
            raise ValueError("a fixed bound needs its norm")
        return float(bound)
    if mode != "median":
        raise ValueError(f"unknown bound mode {mode!r}: median or fixed")
    if len(norms) == 0:
        return math.inf
    factor = DEFAULT_MEDIAN_FACTOR if bound is None else float(bound)
    return factor * float(np.median(np.asarray(norms, dtype=np.float64)))


def clip_scale(norm: float, bound: float) -> float:
    """The factor that brings an update of ``norm`` within ``bound``: ``min(1, bound / norm)``."""
    if norm <= bound or norm == 0.0:
        return 1.0
    return bound / norm


def clip_update(update: Update, bound: float) -> tuple[dict[str, np.ndarray], float]:
    """An update scaled to at most ``bound`` in L2 norm, and the scale applied.

    Parameters
    ----------
    update : Mapping[str, np.ndarray]
        Name -> change (float64 recommended).
    bound : float
        The largest norm allowed.

    Returns
    -------
    (dict[str, np.ndarray], float)
        The (possibly scaled) update in the same order, and the scale (``1.0``: unchanged).
    """
    scale = clip_scale(update_norm(update), bound)
    if scale == 1.0:
        return {name: np.asarray(value) for name, value in update.items()}, 1.0
    return {name: np.asarray(value, dtype=np.float64) * scale for name, value in update.items()}, scale


def trim_count(num_sites: int, trim: float) -> int:
    """Sites dropped per side and per coordinate: ``floor(trim x num_sites)``, at most ``(n-1)//2``."""
    if num_sites <= 0:
        return 0
    return min(int(math.floor(trim * num_sites + 1e-9)), (num_sites - 1) // 2)


def trimmed_mean(values: np.ndarray, trim: float) -> np.ndarray:
    """The coordinate-wise trimmed mean over the first axis.

    Parameters
    ----------
    values : np.ndarray
        ``(sites, ...)``: one row per site.
    trim : float
        Fraction dropped on each side (``floor(trim x sites)`` values per side, and never
        all of them).

    Returns
    -------
    np.ndarray
        ``values.shape[1:]`` in float64: per coordinate, the mean of the values left after
        dropping the ``k`` largest and ``k`` smallest. Independent of the row order: the
        values are sorted first, so the sum always runs in the same order.
    """
    stacked = np.asarray(values, dtype=np.float64)
    k = trim_count(stacked.shape[0], trim)
    ordered = np.sort(stacked, axis=0)
    return ordered[k: stacked.shape[0] - k].mean(axis=0)


def trimmed_counts(values: np.ndarray, trim: float) -> np.ndarray:
    """How many coordinates of each site the trimmed mean dropped.

    Parameters
    ----------
    values : np.ndarray
        ``(sites, ...)`` as for :func:`trimmed_mean`.
    trim : float
        Fraction dropped per side.

    Returns
    -------
    np.ndarray
        ``(sites,)`` int64: per site, the coordinates at which its value was among the
        ``k`` smallest or ``k`` largest. Ties are broken by value then by row (a stable
        sort), so a site's count depends on its position only among equal values.
    """
    stacked = np.asarray(values, dtype=np.float64)
    sites = stacked.shape[0]
    k = trim_count(sites, trim)
    if k == 0:
        return np.zeros(sites, dtype=np.int64)
    flat = stacked.reshape(sites, -1)
    order = np.argsort(flat, axis=0, kind="stable")
    dropped = np.concatenate([order[:k], order[sites - k:]], axis=0)
    return np.bincount(dropped.ravel(), minlength=sites).astype(np.int64)


def trimmed_flag_threshold(num_sites: int, trim: float) -> float:
    """The trimmed fraction above which a site is flagged as trimmed.

    Every site loses ``2k/n`` of its coordinates on average under a symmetric trim (its
    fair share); a site is flagged when it loses more than halfway between that share and
    all of them: ``(1 + 2k/n) / 2``.
    """
    k = trim_count(num_sites, trim)
    if k == 0:
        return math.inf
    return (1.0 + 2.0 * k / num_sites) / 2.0


__all__ = [
    "DEFAULT_MEDIAN_FACTOR",
    "ROBUST_MODES",
    "RobustConfig",
    "clip_scale",
    "clip_update",
    "is_float",
    "norm_bound",
    "robust_config",
    "trim_count",
    "trimmed_counts",
    "trimmed_flag_threshold",
    "trimmed_mean",
    "update_norm",
    "update_of",
]
