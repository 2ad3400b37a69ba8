"""Noise multiplier for a site: fixed, or calibrated to a target over the planned training."""
from __future__ import annotations

from opacus.accountants.utils import get_noise_multiplier

from .config import DPConfig


def calibrate_noise_multiplier(
    cfg: DPConfig, *, sample_rate: float, steps_per_round: int
) -> float:
    """The noise multiplier for ``cfg``.

    With a fixed ``cfg.noise_multiplier`` that value is returned. With
    ``cfg.target_epsilon`` the smallest sigma (to Opacus's search tolerance) is found
    such that ``cfg.planned_rounds * steps_per_round`` steps at ``sample_rate`` spend at
    most ``target_epsilon`` at ``cfg.delta`` under ``cfg.accountant``.

    Parameters
    ----------
    cfg
        The site's DP settings.
    sample_rate
        Poisson sampling rate q of the site's loader (expected batch / dataset size).
    steps_per_round
        DP-SGD steps the site takes per round.
    """
    if cfg.noise_multiplier is not None:
        return float(cfg.noise_multiplier)
    if steps_per_round < 1:
        raise ValueError(f"steps_per_round must be >= 1, got {steps_per_round}")
    assert cfg.planned_rounds is not None and cfg.target_epsilon is not None
    total_steps = int(cfg.planned_rounds) * int(steps_per_round)
    return float(
        get_noise_multiplier(
            target_epsilon=cfg.target_epsilon,
            target_delta=cfg.delta,
            sample_rate=sample_rate,
            steps=total_steps,
            accountant=cfg.accountant,
        )
    )
