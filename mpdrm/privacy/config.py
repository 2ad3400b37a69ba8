"""Configuration of client-side DP-SGD for one site."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

ACCOUNTANTS = ("prv", "rdp")
GRAD_SAMPLE_MODES = ("grouped", "ew", "hooks", "functorch")
#: The unit of privacy: a patient (all of a subject's clips) or a single clip.
UNITS = ("patient", "clip")


@dataclass(frozen=True)
class DPConfig:
    """Settings of DP-SGD at a site (patient-level by default, or clip-level).

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set. With
    ``target_epsilon`` the noise multiplier is calibrated once, so that the planned
    training (``planned_rounds`` rounds of the site's local steps) spends exactly that
    epsilon at ``delta``; it is then kept in the site's DP state for all later rounds.

    Parameters
    ----------
    max_grad_norm
        Per-example clipping bound C (L2 norm over all trainable parameters).
    delta
        The delta of the (epsilon, delta) guarantee. A site refuses a delta that is not
        below 1 / (its number of units: patients, or clips with ``unit="clip"``).
    noise_multiplier
        Fixed ratio sigma of the Gaussian noise's std to C.
    target_epsilon
        Epsilon to reach at the end of the planned training.
    planned_rounds
        Number of federated rounds the site is planned to train in; required with
        ``target_epsilon``.
    epsilon_budget
        Hard limit: a round whose training would take the site's epsilon above it is
        refused. Defaults to ``target_epsilon``; ``None`` with a fixed noise multiplier
        means no limit.
    accountant
        ``"prv"`` (Opacus default, tightest) or ``"rdp"``.
    grad_sample_mode
        Opacus per-sample gradient mode: ``"grouped"`` (Opacus hooks, with convolutions
        and GroupNorms that compute their own per-sample gradients:
        ``mpdrm.privacy.per_sample_layers``; fastest on MPDRM), ``"ew"``, ``"hooks"`` or
        ``"functorch"``.
    noise_seed
        Seed of the noise generator (reproducible runs); ``None`` uses torch's global
        RNG. Ignored with ``secure_mode``.
    secure_mode
        Use Opacus's cryptographically secure RNG for noise and sampling (clip level only).
    unit
        ``"patient"``: each step Poisson-samples patients and clips each patient's summed
        gradient (the guarantee covers a patient's every visit and clip at the site);
        ``"clip"``: each clip is a record (the guarantee covers one clip only).
    clips_per_patient
        Clips taken from a sampled patient per step (patient level).
    patients_per_step
        Expected patients per step (patient level); ``None``: the run's batch size divided
        by ``clips_per_patient`` (at least 1).
    """

    max_grad_norm: float = 1.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    planned_rounds: int | None = None
    epsilon_budget: float | None = None
    accountant: str = "prv"
    grad_sample_mode: str = "grouped"
    noise_seed: int | None = None
    secure_mode: bool = False
    unit: str = "patient"
    clips_per_patient: int = 4
    patients_per_step: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            problems.append("set exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            problems.append(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None:
            if not self.target_epsilon > 0:
                problems.append(f"target_epsilon must be > 0, got {self.target_epsilon}")
            if self.planned_rounds is None or self.planned_rounds < 1:
                problems.append("target_epsilon needs planned_rounds >= 1")
        if not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            problems.append(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon_budget is not None and not self.epsilon_budget > 0:
            problems.append(f"epsilon_budget must be > 0, got {self.epsilon_budget}")
        if self.accountant not in ACCOUNTANTS:
            problems.append(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            problems.append(
                f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}"
            )
        if self.unit not in UNITS:
            problems.append(f"unit must be one of {UNITS}, got {self.unit!r}")
        if not self.clips_per_patient >= 1:
            problems.append(f"clips_per_patient must be >= 1, got {self.clips_per_patient}")
        if self.patients_per_step is not None and not self.patients_per_step > 0:
            problems.append(f"patients_per_step must be > 0, got {self.patients_per_step}")
        if problems:
            raise ValueError("invalid DP config: " + "; ".join(problems))

    @property
    def budget(self) -> float:
        """The epsilon limit enforced before each round (``inf`` when unlimited)."""
        if self.epsilon_budget is not None:
            return float(self.epsilon_budget)
        if self.target_epsilon is not None:
            return float(self.target_epsilon)
        return math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (``None`` for unset ones)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DPConfig":
        """Build from a mapping such as a Hydra node or a Flower ConfigRecord.

        Keys may use ``-`` or ``_`` (``noise-multiplier`` or ``noise_multiplier``) and
        an optional ``dp-`` / ``dp_`` prefix; keys whose value is ``None`` are ignored
        (Flower records cannot hold ``None``: leave the key out instead). Unknown keys
        are an error.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in values.items():
            name = key.replace("-", "_")
            if name.startswith("dp_"):
                name = name[3:]
            if name not in fields:
                unknown.append(key)
            elif value is not None:
                kwargs[name] = value
        if unknown:
            raise ValueError(f"unknown DP config keys: {sorted(unknown)}; known: {sorted(fields)}")
        return cls(**kwargs)
