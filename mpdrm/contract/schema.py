"""The typed run configuration: the single source of every setting's name, type and default.

:class:`RunSchema` is what ``mpdrm-simulate`` composes (a Hydra structured config: the
YAML groups in ``simulations/conf/`` hold only their overrides) and what the flat Flower
run config is derived from (:mod:`mpdrm.contract.runconfig`; ``[tool.flwr.app.config]``
in pyproject.toml is generated from it by ``./dev sync-config``).

Sections reuse the library's own dataclasses where one exists, so a default lives in one
place: ``train`` is :class:`mpdrm.training.TrainConfig` (less ``seed``, which every site
derives per round), ``prepare`` is :class:`mpdrm.data.prepare.PrepareConfig` (less the clip
shape, which follows the model: :func:`prepare_config`), ``dp`` holds the fields of
:class:`mpdrm.privacy.DPConfig` and :class:`CentralDPConfig`, where ``None`` means "that
mode's default".

Field metadata: ``flat`` renames a field in the flat run config (``rounds`` ->
``num-server-rounds``); ``simulation_only`` keeps it out of the flat run config (it only
drives ``mpdrm-simulate``: cohort generation, Ray resources).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from mpdrm.config import MPDRMConfig, make_config
from mpdrm.data.prepare import PrepareConfig
from mpdrm.privacy.config import DPConfig
from mpdrm.training import TrainConfig

#: Key of a field's metadata: its name in the flat run config.
FLAT = "flat"
#: Key of a field's metadata: ``mpdrm-simulate`` only, not in the flat run config.
SIMULATION_ONLY = "simulation_only"

#: Clip-shape fields of PrepareConfig that follow the model (see :func:`prepare_config`).
CLIP_SHAPE_FIELDS = ("frames", "size", "grayscale")


def _flat(name: str) -> dict[str, Any]:
    return {FLAT: name}


_SIM = {SIMULATION_ONLY: True}


def _optional(annotation: Any) -> Any:
    """``X | None`` as ``typing.Optional[X]`` (what OmegaConf understands)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return Optional[rest[0]] if len(rest) == 1 else Any
    return annotation


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    raise TypeError(f"field {f.name} has no default")


def section_of(cls: type, name: str, *, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
               types: dict[str, Any] | None = None, doc: str = "") -> type:
    """A schema section with the fields (types, defaults) of dataclass ``cls``.

    Parameters
    ----------
    cls : type
        The library dataclass whose fields the section carries.
    name : str
        Name of the new dataclass.
    exclude : tuple of str
        Fields left out.
    defaults : dict, optional
        A run's defaults where they differ from the library's (direct API use).
    types : dict, optional
        Field types that differ from the library's (e.g. ``Any`` for a field that also
        takes a Hydra list).
    """
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude:
            continue
        default = (defaults or {}).get(f.name, _default_of(f))
        annotation = (types or {}).get(f.name, _optional(hints[f.name]))
        specs.append((f.name, annotation, field(default=default)))
    section = dataclasses.make_dataclass(name, specs)
    section.__doc__ = doc or f"The fields of {cls.__module__}.{cls.__qualname__}."
    section.__module__ = __name__
    return section


@dataclass
class CentralDPConfig:
    """Server-side (central, site-level) DP: Flower's clipping + Gaussian noise wrappers.

    Parameters
    ----------
    noise_multiplier
        Std of the noise on the mean, in units of ``clipping_norm / num_sampled_clients``
        (required: no default protects anything in particular).
    clipping_norm
        Fixed L2 bound of each site's update (the initial bound when ``adaptive``).
    adaptive
        Flower's adaptive clipping (no accountant then).
    target_clipped_quantile, clip_norm_lr, clipped_count_stddev
        Adaptive clipping's knobs (``clipped_count_stddev=None``: Flower's sites/20).
    num_sampled_clients
        Sites per round; ``None``: the run's ``min-sites``.
    delta
        The delta of the accounted (epsilon, delta).
    """

    noise_multiplier: Optional[float] = None
    clipping_norm: float = 1.0
    adaptive: bool = False
    target_clipped_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    clipped_count_stddev: Optional[float] = None
    num_sampled_clients: Optional[int] = None
    delta: float = 1e-5


#: ``dp.mode`` values.
DP_MODES = ("none", "opacus", "central")


def _dp_section() -> type:
    hints = {**typing.get_type_hints(DPConfig), **typing.get_type_hints(CentralDPConfig)}
    names = [f.name for f in dataclasses.fields(DPConfig)]
    names += [f.name for f in dataclasses.fields(CentralDPConfig) if f.name not in names]
    specs: list[Any] = [("mode", str, field(default="none"))]
    specs += [(n, Optional[_optional(hints[n])], field(default=None)) for n in names]
    section = dataclasses.make_dataclass("DPSection", specs)
    section.__doc__ = ("``mode`` (none | opacus | central) and the fields of DPConfig (opacus) and "
                       "CentralDPConfig (central); None: that mode's default.")
    section.__module__ = __name__
    return section


#: A run trains 2 local epochs per round at a constant learning rate (``TrainConfig`` alone:
#: 1 epoch, cosine); a schedule restarting every round did not help federated runs.
RUN_TRAIN_DEFAULTS = {"epochs": 2, "schedule": "none"}

TrainSection = section_of(TrainConfig, "TrainSection", exclude=("seed",), defaults=RUN_TRAIN_DEFAULTS,
                          types={"freeze": Any, "augment": Any})  # comma-separated names, or a list
PrepareSection = section_of(PrepareConfig, "PrepareSection", exclude=CLIP_SHAPE_FIELDS)
DPSection = _dp_section()


@dataclass
class ModelSection:
    """The model: a named size (``mpdrm.config.SIZES``) and what overrides it.

    ``image_size``, ``frames``, ``in_channels``: ``None`` keeps the size's value; the clips
    are prepared at the resulting shape (``prepare`` has no shape of its own).
    """

    size: str = "tiny"
    use_mmp: bool = True
    use_mpfn: bool = True
    use_rarm: bool = True
    use_orthogonality: bool = True
    isolate_personality: bool = False  # RARM reads p detached: only the contrastive terms train MPFN
    personal_offset: bool = False  # site-local offset(p) added to the prediction (stays at the site)
    depression_input: str = "frames"  # frames | motion (each pixel minus its mean over the clip)
    image_size: Optional[int] = None
    frames: Optional[int] = None
    in_channels: Optional[int] = None


@dataclass
class StrategySection:
    """What is federated and how replies are aggregated."""

    mode: str = field(default="mpdrm", metadata=_flat("mode"))  # mpdrm | fedavg_full | local_only | centralized
    aggregation: str = "fedavg"  # fedavg | fedadam | fedyogi | fedavgm | fedprox | fedmedian | fedtrimmedavg
    fraction_train: float = field(default=1.0, metadata=_flat("fraction-train"))
    fraction_evaluate: float = field(default=1.0, metadata=_flat("fraction-evaluate"))
    options: dict[str, Any] = field(default_factory=dict)  # the Flower aggregator's keywords, e.g. {eta: 0.01}
    # bounded influence of one site (strategies.robust): each update (reply - global) is norm-bounded
    # before aggregation: "" (off) | median (robust_bound x the round's median update norm) | fixed
    robust: str = ""
    # median: the multiplier (None: 2.0); fixed: the L2 norm itself (required)
    robust_bound: Optional[float] = None
    # coordinate-wise trimmed mean: fraction of sites dropped per side (0: off; < 0.5)
    robust_trim: float = 0.0


@dataclass
class SynthSection:
    """The default synthetic cohort (``mpdrm.data.synth.generate_cohort``; ``sites``, ``seed``
    come from the top level)."""

    subjects: int = 8
    visits: int = 3
    seconds: float = 8.0
    confound: float = 0.6


@dataclass
class DataSection:
    """How a site splits and batches its clips."""

    test_fraction: float = 0.25  # fraction of each site's subjects held out (subject-disjoint)
    task: str = "regression"  # regression | classification
    score_max: Optional[float] = 27.0  # PHQ-9; None (mpdrm-simulate): the cohort's cohort.json
    batch_size: int = 8
    eval_batch_size: int = 32
    pk_p: int = 4  # P subjects x K clips per training batch (0: plain shuffled batches)
    pk_k: int = 2
    workers: int = 0  # DataLoader workers per client
    prepare_workers: int = field(default=2, metadata=_SIM)  # processes preparing the cohort once
    synth: SynthSection = field(default_factory=SynthSection, metadata=_SIM)


@dataclass
class EvalSection:
    """Who is scored, and where a scored clip's personality embedding comes from."""

    protocol: str = "subjects"  # subjects | visits | enrolled (mpdrm.data.splits.PROTOCOLS)
    # auto: reference (the subject's training or enrolment clips) when the protocol knows the
    # person, else clip | clip (p from the scored clip) | subject_mean (from all the subject's
    # scored clips) | reference
    personality: str = "auto"
    # a site's own offset added to the shared model's scores, fitted on its training videos
    # (mpdrm.calibration): offset | none
    calibration: str = "offset"


@dataclass
class ResourcesSection:
    """Flower's simulation engine (Ray) resources."""

    client_cpus: float = 2.0  # CPUs per ClientApp (Flower's default); on 2 cores: one client at a time
    client_gpus: float = 0.0
    num_cpus: Optional[int] = None  # CPUs Ray may use; None: all of this machine
    # an existing Ray cluster to run the sites on ("HOST:PORT" of its head, or "auto"); None:
    # start Ray on this machine. With an address, num_cpus is the cluster's business.
    ray_address: Optional[str] = None
    log_level: str = "WARNING"  # Flower and Ray log level in the console (INFO shows every message)


@dataclass
class RunSchema:
    """Every setting of a run. See the module docstring for the flat names."""

    rounds: int = field(default=6, metadata=_flat("num-server-rounds"))
    seed: int = 0
    run_dir: str = field(default="runs/server", metadata=_flat("run-dir"))
    resume: bool = False  # continue the checkpoint in run_dir
    cohort: Optional[str] = None  # simulation: the cohort folder (None: the default synthetic one)
    # shared weights to start from (a file strategy=centralized writes: <run_dir>/shared.safetensors)
    init: Optional[str] = None
    state_root: Optional[str] = field(default=None, metadata=_flat("state-root"))  # simulation: sites' private state
    min_sites: Optional[int] = field(default=2, metadata=_flat("min-sites"))  # None (mpdrm-simulate): every site
    min_sites_wait: float = field(default=120.0, metadata=_flat("min-sites-wait"))
    round_timeout: float = field(default=3600.0, metadata=_flat("round-timeout"))
    # once min-sites valid replies of a stage are in, wait at most this long for the others
    round_grace: float = field(default=600.0, metadata=_flat("round-grace"))
    strategy: StrategySection = field(default_factory=StrategySection)
    model: ModelSection = field(default_factory=ModelSection)
    prepare: PrepareSection = field(default_factory=PrepareSection)  # type: ignore[valid-type]
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]
    eval: EvalSection = field(default_factory=EvalSection)
    dp: DPSection = field(default_factory=DPSection)  # type: ignore[valid-type]
    sites: int = field(default=3, metadata=_SIM)  # sites of the generated synthetic cohort
    cache_dir: str = field(default="~/.cache/fedmpdrm", metadata=_SIM)  # where generated cohorts are kept
    audit: bool = field(default=False, metadata=_SIM)  # record every outbound client message
    resources: ResourcesSection = field(default_factory=ResourcesSection, metadata=_SIM)


def model_config(model: ModelSection | dict[str, Any], task: str = "regression", num_subjects: int = 0) -> MPDRMConfig:
    """The :class:`MPDRMConfig` of a model section: the size, then the fields that are set."""
    values = dataclasses.asdict(model) if dataclasses.is_dataclass(model) else dict(model)
    size = str(values.pop("size", "tiny"))
    overrides = {k: v for k, v in values.items() if v is not None}
    return make_config(size, task=task, num_subjects=num_subjects, **overrides)


def prepare_config(prepare: dict[str, Any], model: MPDRMConfig) -> PrepareConfig:
    """The :class:`PrepareConfig` of a run: the ``prepare`` section at the model's clip shape."""
    shape = {"frames": model.frames, "size": model.image_size, "grayscale": model.in_channels == 1}
    values = {k: v for k, v in prepare.items() if k not in CLIP_SHAPE_FIELDS}
    return PrepareConfig(**values, **shape)


__all__ = [
    "CentralDPConfig", "DataSection", "DPSection", "DP_MODES", "EvalSection", "ModelSection",
    "PrepareSection", "ResourcesSection", "RunSchema", "StrategySection", "SynthSection",
    "TrainSection", "model_config", "prepare_config",
]
