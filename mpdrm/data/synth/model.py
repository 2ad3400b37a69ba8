"""The generative model of the synthetic cohort: channels, habits, signatures, severity.

Severity ``z`` in [0, 1] (the latent state; score = scale maximum x z plus rater noise).

Each *dynamics channel* c has a value per visit, computed in a unit space::

    u_c = base_c + slope_c * z + confound * habit_scale_c * h[habit_c]
    value_c = exp(u_c)            (kind "log": rates, amplitudes, durations)
    value_c = u_c                 (kind "lin": gaze)

where ``h`` are the subject's habits, standard normal (clipped to +-2.5) and stable across
visits. ``habit_scale_c = 0.3 * slope_c`` (signed), so within the channels it acts on a habit
moves the face exactly the way severity does: a low-expressivity person looks like a more
depressed one, and no single video can tell habit from state - only knowing the person can
(the paper's premise). At ``confound = 1`` a subject one SD from the mean habit looks like
one whose severity is 0.3 higher or lower (about one SD of severity in the default cohort);
the between-subject variance of ``u_c`` at fixed severity is
``confound**2 * habit_scale_c**2``, i.e. it grows with the square of the knob. At
``confound = 0`` habits vanish from every channel and the dynamics depend on severity alone.

Signatures (face geometry, skin, hair, a head tilt, a personal tic rhythm) never depend on
severity or on the confound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

HABITS = ("expressivity", "head_amplitude", "head_speed", "blink", "gaze", "brow")
TRAJECTORIES = ("improving", "worsening", "stable")
SEX = ("F", "M")


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str          # "log" or "lin"
    base: float        # u at z = 0 and h = 0
    slope: float       # du/dz
    habit: str         # which habit acts on it
    unit: str

    @property
    def habit_scale(self) -> float:
        return 0.3 * self.slope

    def value(self, z: float, h: float, confound: float) -> float:
        u = self.base + self.slope * z + confound * self.habit_scale * h
        return math.exp(u) if self.kind == "log" else u

    def unit_value(self, value: float) -> float:
        return math.log(value) if self.kind == "log" else value


# severity directions: fewer + smaller smiles, slower + smaller head motion, longer blinks,
# gaze lowered, less brow activity (and rarer blinks, so the blink habit has two channels).
CHANNELS: tuple[Channel, ...] = (
    Channel("smile_rate", "log", math.log(0.9), -1.8, "expressivity", "smiles per second"),
    Channel("smile_amp", "log", math.log(1.0), -1.4, "expressivity", "smile strength, 1 = full"),
    Channel("head_amp", "log", math.log(0.22), -1.5, "head_amplitude", "face half-heights"),
    Channel("head_speed", "log", math.log(0.8), -1.1, "head_speed", "Hz"),
    Channel("blink_dur", "log", math.log(0.12), 1.4, "blink", "seconds eyes closed"),
    Channel("blink_rate", "log", math.log(0.35), -0.8, "blink", "blinks per second"),
    Channel("gaze_down", "lin", 0.0, 0.8, "gaze", "0 = straight ahead, 1 = fully lowered"),
    Channel("brow_amp", "log", math.log(1.0), -1.4, "brow", "brow raise strength"),
)
CHANNEL_INDEX = {c.name: i for i, c in enumerate(CHANNELS)}


def channel_table() -> list[dict]:
    return [{"name": c.name, "kind": c.kind, "base": round(c.base, 6), "slope": c.slope,
             "habit": c.habit, "habit_scale": round(c.habit_scale, 6), "unit": c.unit}
            for c in CHANNELS]


def slope_vector() -> np.ndarray:
    return np.array([c.slope for c in CHANNELS])


def habit_matrix() -> np.ndarray:
    """(channels, habits) matrix B with u = base + slope*z + confound * B @ h."""
    b = np.zeros((len(CHANNELS), len(HABITS)))
    for i, c in enumerate(CHANNELS):
        b[i, HABITS.index(c.habit)] = c.habit_scale
    return b


@dataclass
class Signature:
    """Stable, severity-free appearance and rhythm of a subject (in face units: the face's
    half-height is 1)."""

    size: float
    aspect: float          # half-width / half-height
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_len: float
    brow_slant: float
    brow_thick: float
    nose_len: float
    mouth_y: float
    mouth_w: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int        # 0 short cap, 1 long, 2 fringe, 3 bald with beard
    glasses: bool
    tilt_deg: float
    tic_period: float      # seconds
    tic_phase: float       # 0..1
    tic_side: int          # -1 left, +1 right


@dataclass
class Subject:
    site: int
    index: int
    id: str
    sex: str
    birth_year: int
    habits: dict[str, float]
    signature: Signature
    trajectory: str
    severity: list[float] = field(default_factory=list)   # per visit, latent z


def sample_signature(rng: np.random.Generator) -> Signature:
    tone = rng.uniform(120, 215)
    skin = (int(np.clip(tone * rng.uniform(0.72, 0.85), 0, 255)),
            int(np.clip(tone * rng.uniform(0.85, 0.95), 0, 255)), int(np.clip(tone, 0, 255)))
    hd = rng.uniform(20, 110)
    hair = (int(hd * rng.uniform(0.6, 0.9)), int(hd * rng.uniform(0.7, 1.0)), int(hd))
    return Signature(
        size=float(rng.uniform(0.92, 1.08)), aspect=float(rng.uniform(0.70, 0.86)),
        eye_dx=float(rng.uniform(0.28, 0.40)), eye_y=float(rng.uniform(-0.24, -0.12)),
        eye_w=float(rng.uniform(0.13, 0.18)), eye_h=float(rng.uniform(0.075, 0.10)),
        brow_gap=float(rng.uniform(0.11, 0.16)), brow_len=float(rng.uniform(0.15, 0.22)),
        brow_slant=float(rng.uniform(-0.06, 0.06)), brow_thick=float(rng.uniform(0.035, 0.07)),
        nose_len=float(rng.uniform(0.14, 0.26)), mouth_y=float(rng.uniform(0.40, 0.50)),
        mouth_w=float(rng.uniform(0.22, 0.32)), skin=skin, hair=hair,
        hair_style=int(rng.integers(0, 4)), glasses=bool(rng.random() < 0.3),
        tilt_deg=float(rng.uniform(-10, 10)), tic_period=float(rng.uniform(0.8, 2.2)),
        tic_phase=float(rng.uniform(0, 1)), tic_side=int(rng.choice([-1, 1])))


def sample_trajectory(rng: np.random.Generator, z0: float, visits: int) -> tuple[str, list[float]]:
    """A severity trajectory over ``visits`` visits starting near ``z0``."""
    kind = str(rng.choice(TRAJECTORIES, p=[0.4, 0.25, 0.35]))
    if kind == "improving" and z0 < 0.3:
        kind = "stable"
    if kind == "worsening" and z0 > 0.7:
        kind = "stable"
    delta = float(rng.uniform(0.25, 0.5))
    change = {"improving": -delta, "worsening": delta, "stable": float(rng.normal(0, 0.04))}[kind]
    zs = []
    for v in range(visits):
        frac = v / (visits - 1) if visits > 1 else 0.0
        z = z0 + change * frac + (rng.normal(0, 0.04) if v else 0.0)
        zs.append(float(np.clip(z, 0.02, 0.98)))
    return kind, zs


def site_severity_means(n_sites: int, rng: np.random.Generator) -> list[float]:
    """Sites differ in their severity distribution: means spread over [0.3, 0.65]."""
    means = np.linspace(0.3, 0.65, n_sites) if n_sites > 1 else np.array([0.45])
    return [float(m) for m in rng.permutation(means)]


def sample_subject(rng: np.random.Generator, *, site: int, index: int, visits: int,
                   severity_mean: float) -> Subject:
    habits = {h: float(np.clip(rng.standard_normal(), -2.5, 2.5)) for h in HABITS}
    sig = sample_signature(rng)
    kappa = 5.0
    z0 = float(rng.beta(severity_mean * kappa, (1 - severity_mean) * kappa))
    trajectory, zs = sample_trajectory(rng, z0, visits)
    sid = f"S{site + 1:02d}-{index + 1:02d}"
    return Subject(site=site, index=index, id=sid, sex=str(rng.choice(SEX)),
                   birth_year=int(rng.integers(1950, 2004)), habits=habits, signature=sig,
                   trajectory=trajectory, severity=zs)


def visit_dynamics(z: float, habits: dict[str, float], confound: float) -> dict[str, float]:
    """The per-visit dynamics parameters that the renderer uses."""
    return {c.name: c.value(z, habits[c.habit], confound) for c in CHANNELS}


def score_from_severity(rng: np.random.Generator, z: float, score_max: float,
                        rater_sd: float) -> int:
    s = round(score_max * z + rng.normal(0, rater_sd))
    return int(min(max(s, 0), int(score_max)))
