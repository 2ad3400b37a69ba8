"""One site's local training loop and its evaluation.

Batches are dicts (docs/interfaces.md): ``clips`` (B,C,T,H,W) float32, ``target`` (B,) float32
normalised score or int64 class, ``subject`` (B,) int64, ``visit`` (B,) int64, ``video`` (B,) int64.

`train_local` is the one loop for plain and private training. What differs lives in an
``engine`` (`mpdrm.training_engine.TrainingEngine`): it builds the optimizer and restores its
state, wraps model/optimizer/loader, takes each step, unwraps after the last step and returns
the optimizer state. `PlainEngine` (the default) is the ordinary step with global gradient
clipping; ``mpdrm.privacy.PrivateEngine`` is DP-SGD with Opacus. The loop itself:

- seeds Python, numpy and torch from ``cfg.seed`` first, so a call is a function of its
  inputs (the weights, the optimizer state, the loader and ``cfg``), whatever RNG state the
  caller left: a resumed site trains exactly like an uninterrupted one.
- applies the FedProx proximal term as a decoupled step after each engine step,
  ``w <- w - lr_t * mu * (w - w_ref)`` for the parameters named in ``reference_params``: for SGD
  this is exactly the gradient of ``mu/2 ||w - w_ref||^2``; for AdamW it is decoupled like AdamW's
  weight decay. It uses no data, so under DP-SGD it is post-processing and costs no privacy.
- runs the learning-rate schedule over this call's steps (``epochs * len(loader)``, or
  ``max_steps``) starting from ``cfg.lr``, also when an optimizer state is restored.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .allocator import keep_freed_memory
from .augment import ClipAugment, parse_augment
from .device import resolve_device, seed_everything
from .losses import MPDRMLoss
from .memory_format import clips_in_format, contiguous_tensors, model_in_format, resolve_memory_format
from .metrics import clip_and_video_metrics
from .partitioning import unwrap
from .training_engine import PlainEngine, TrainingEngine, default_step, make_optimizer

SCHEDULES = ("cosine", "step", "none")
ROUND_SCHEDULES = ("cosine", "none")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    epochs: int = 1
    optimizer: str = "adamw"  # adamw | sgd (heavy-ball momentum)
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0  # max global gradient norm (non-DP); None or <= 0: off
    schedule: str = "cosine"  # cosine | step | none
    step_size: int = 1  # step schedule: epochs between decays
    step_gamma: float = 0.5  # step schedule: decay factor
    min_lr_ratio: float = 0.0  # cosine schedule floor, as a fraction of lr
    loss: str = "mse"  # regression: mse | huber (classification always uses cross-entropy)
    huber_delta: float = 0.1
    lambda_c: float = 0.1  # contrastive weight
    lambda_o: float = 0.1  # orthogonality weight (ignored when the model's use_orthogonality is off)
    contrastive: str = "supcon"  # supcon | prototype
    temperature: float = 0.1
    proximal_mu: float = 0.0  # FedProx; needs reference_params
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_steps: int | None = None  # stop early after this many steps
    # parameter-name prefixes kept as received, not trained: comma-separated or a JSON list
    # (e.g. "depression.backbone,personality.backbone"; mpdrm-simulate
    # 'train.freeze=[depression.backbone,personality.backbone]')
    freeze: str = ""
    # glibc keeps freed memory for the next step (mpdrm.allocator): fewer page faults, but
    # the process keeps its peak memory
    keep_freed_memory: bool = True
    # the layout the convolutions train in (mpdrm.memory_format): auto (channels-last on the CPU:
    # tiny and base 1.07-1.35x a step there, the paper size slower) | channels_last | contiguous;
    # DP-SGD always trains contiguous (its per-sample gradient hooks are tested in that layout)
    memory_format: str = "auto"
    # federated sites: whose optimizer state (AdamW moments, momentum) a site carries into its
    # next round: all | local (only the parameters that stay at the site; the shared ones were
    # just replaced by the aggregate) | none
    carry_optimizer_state: str = "all"
    # federated sites: the learning rate across the run's rounds (``schedule`` acts within one
    # round): none (lr every round) | cosine (lr in round 1, decaying towards min_lr_ratio x lr)
    round_schedule: str = "none"
    # before a personality branch's first training (a new site, or centralized training), centre
    # its projection on up to CENTER_CLIPS of the training clips so that p does not start as the
    # same point for everyone (MPFN.center_projection); never under DP-SGD (data-dependent and
    # outside the privacy accounting). Off by default: with it (and isolate_personality) the branch
    # tells people apart, but the default run ended worse on 4 of 5 seeds (docs/benchmarks.md)
    center_personality: bool = False
    # training-time clip augmentation (mpdrm.augment): comma-separated names from flip,
    # photometric, reverse ("" off), applied per clip to every training batch, never at evaluation
    augment: str = ""
    augment_strength: float = 0.2  # photometric: log-contrast range, and twice the brightness shift

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.contrastive not in ("supcon", "prototype"):
            raise ValueError(f"contrastive must be supcon or prototype, got {self.contrastive!r}")
        if self.round_schedule not in ROUND_SCHEDULES:
            raise ValueError(f"round_schedule must be one of {ROUND_SCHEDULES}, got {self.round_schedule!r}")
        parse_augment(self.augment)
        if not 0 <= self.augment_strength <= 1:
            raise ValueError(f"augment_strength must be in [0, 1], got {self.augment_strength}")
        resolve_memory_format(self.memory_format, torch.device("cpu"))
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"loss must be mse or huber, got {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def freeze_prefixes(self) -> tuple[str, ...]:
        """``freeze`` as prefixes: comma-separated, or a JSON list (a Hydra list flattened by
        ``mpdrm.contract.runconfig.flatten``)."""
        text = self.freeze.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return tuple(str(p).strip() for p in items if str(p).strip())


@dataclass
class TrainResult:
    metrics: dict[str, float]
    optimizer_state: dict[str, Any]
    num_examples: int
    steps: int


def cosine_factor(progress: float, floor: float) -> float:
    """Cosine decay from 1 at ``progress`` 0 to ``floor`` at ``progress`` 1."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiplier of cfg.lr at `step` (0-based) of `total_steps`."""
    if cfg.schedule == "cosine" and total_steps > 0:
        progress = min(step / total_steps, 1.0)
        return cosine_factor(progress, cfg.min_lr_ratio)
    if cfg.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.step_gamma ** (epoch // max(cfg.step_size, 1))
    return 1.0


def round_lr_factor(cfg: TrainConfig, server_round: int, rounds: int) -> float:
    """The multiplier of cfg.lr in federated round ``server_round`` (1-based) of ``rounds``
    (``cfg.round_schedule``); cosine gives 1 in round 1 and min_lr_ratio + (1 - min_lr_ratio) x
    (1 + cos(pi (rounds - 1) / rounds)) / 2 in the last."""
    if cfg.round_schedule != "cosine" or rounds <= 1:
        return 1.0
    return cosine_factor(min(max(server_round - 1, 0) / rounds, 1.0), cfg.min_lr_ratio)


def move_batch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _batch_size(batch: Mapping[str, Any]) -> int:
    return int(batch["clips"].shape[0])


@contextlib.contextmanager
def frozen_parameters(model: nn.Module, prefixes: Iterable[str]) -> Iterator[list[nn.Parameter]]:
    """Within the block, do not train the parameters whose names start with any of ``prefixes``.

    Yields the parameters it froze; they are trainable again when the block ends.

    Raises
    ------
    ValueError
        If a prefix matches no parameter (a typo would otherwise train everything).
    """
    prefixes = tuple(prefixes)
    named = list(unwrap(model).named_parameters())
    unmatched = [pre for pre in prefixes if not any(n.startswith(pre) for n, _ in named)]
    if unmatched:
        raise ValueError(f"train.freeze: no parameter name starts with {unmatched}")
    frozen = [p for n, p in named if p.requires_grad and n.startswith(prefixes)] if prefixes else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield frozen
    finally:
        for p in frozen:
            p.requires_grad_(True)


def planned_steps(cfg: TrainConfig, loader: Iterable) -> tuple[int, int]:
    """``(total_steps, steps_per_epoch)`` of a call: ``epochs * len(loader)`` capped at
    ``max_steps`` (``max_steps`` alone when the loader has no length)."""
    try:
        steps_per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = 0
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps) if total_steps else cfg.max_steps
    return total_steps, steps_per_epoch


Pairs = list[tuple[torch.Tensor, torch.Tensor]]


def proximal_pairs(model: nn.Module, reference_params: Mapping[str, torch.Tensor] | None, cfg: TrainConfig,
                   device: torch.device) -> Pairs:
    """``(parameter, reference)`` for the trainable parameters named in ``reference_params``;
    empty when FedProx is off (no reference or ``cfg.proximal_mu <= 0``)."""
    if reference_params is None or cfg.proximal_mu <= 0:
        return []
    named = dict(model.named_parameters())
    return [(named[k], v.detach().to(device, named[k].dtype)) for k, v in reference_params.items()
            if k in named and named[k].requires_grad]


@torch.no_grad()
def proximal_step(pairs: Pairs, lr: float, mu: float) -> None:
    """The decoupled FedProx step ``w <- w - lr * mu * (w - w_ref)``."""
    for p, r in pairs:
        p.sub_(lr * mu * (p - r))


@torch.no_grad()
def proximal_term(pairs: Pairs, mu: float) -> float:
    """``mu/2 ||w - w_ref||^2`` (0 without pairs)."""
    if not pairs:
        return 0.0
    return float(sum(((p - r) ** 2).sum() for p, r in pairs)) * mu / 2


@dataclass
class _Tally:
    """What the loop counts: example-weighted loss sums, examples, steps, the last lr."""

    lr: float
    sums: dict[str, float]
    seen: int = 0
    first_epoch_examples: int = 0
    steps: int = 0

    def add(self, parts: Mapping[str, torch.Tensor], batch_size: int, epoch: int) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * batch_size
        self.seen += batch_size
        if epoch == 0:
            self.first_epoch_examples += batch_size
        self.steps += 1

    def means(self) -> dict[str, float]:
        return {k: (v / self.seen if self.seen else float("nan")) for k, v in self.sums.items()}


def run_steps(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], cfg: TrainConfig,
              engine: TrainingEngine, loss_fn: Callable, pairs: Pairs, device: torch.device,
              layout: torch.memory_format = torch.contiguous_format) -> _Tally:
    """The epochs: per batch set the scheduled lr, take the engine's step, then the proximal one
    (the clips in ``layout``, the model's)."""
    total_steps, steps_per_epoch = planned_steps(cfg, loader)
    augment = ClipAugment(parse_augment(cfg.augment), cfg.augment_strength, seed=cfg.seed)
    tally = _Tally(lr=cfg.lr, sums={})
    for epoch in range(cfg.epochs):
        for batch in loader:
            if cfg.max_steps is not None and tally.steps >= cfg.max_steps:
                return tally
            tally.lr = cfg.lr * lr_factor(cfg, tally.steps, total_steps, steps_per_epoch)
            engine.set_lr(tally.lr)
            batch = clips_in_format(augment.batch(move_batch(batch, device)), layout)
            parts = engine.step(model, batch, loss_fn)
            if pairs:
                proximal_step(pairs, tally.lr, cfg.proximal_mu)
            tally.add(parts, _batch_size(batch), epoch)
    return tally


def _num_examples(loader: Iterable, first_epoch_examples: int) -> int:
    """The loader's dataset size when it has one, else the examples of the first epoch."""
    dataset = getattr(loader, "dataset", None)
    try:
        return int(len(dataset)) if dataset is not None else first_epoch_examples  # type: ignore[arg-type]
    except TypeError:
        return first_epoch_examples


def _home_device(model: nn.Module, default: torch.device) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return default


#: Training clips a new personality branch is centred on (:func:`center_personality`).
CENTER_CLIPS = 256


def center_personality(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                       max_clips: int = CENTER_CLIPS) -> int:
    """Centre the personality projection of ``model`` on the first ``max_clips`` clips of
    ``batches`` (see ``PersonalityNetwork.center_projection``); returns the clips used (0 for a
    model without a personality branch)."""
    bare = unwrap(model)
    if getattr(bare, "personality", None) is None:
        return 0
    taken: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        taken.append(batch["clips"][: max_clips - count])
        count += len(taken[-1])
        if count >= max_clips:
            break
    if not count:
        return 0
    device = next(bare.parameters()).device
    bare.personality.center_projection(torch.cat(taken).to(device))
    return count


def train_local(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    cfg: TrainConfig,
    *,
    engine: TrainingEngine | None = None,
    optimizer_state: dict[str, Any] | None = None,
    reference_params: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train `model` in place on one site's batches; returns metrics and the optimizer state.

    Parameters
    ----------
    model, loader, cfg
        The (plain) model, the site's batches and the training settings.
    engine
        How to build the optimizer, wrap, step and unwrap (see `mpdrm.training_engine`);
        default a new `PlainEngine`. ``mpdrm.privacy.PrivateEngine`` trains with DP-SGD.
    optimizer_state
        The previous round's ``TrainResult.optimizer_state`` (lr and weight decay come from ``cfg``).
    reference_params
        name -> tensor: FedProx's reference weights (with ``cfg.proximal_mu > 0``).

    Returns
    -------
    TrainResult
        metrics: the example-weighted means of 'loss', 'task', 'contrastive', 'orthogonality'
        over the steps, 'proximal' (mu/2 ||w - w_ref||^2 at the end), 'lr' (last), 'seconds',
        'examples_per_second'. num_examples: the loader's dataset size when it has one (else the
        examples of the first epoch). The model is returned to the device it came on.
    """
    if cfg.keep_freed_memory:
        keep_freed_memory()
    engine = engine if engine is not None else PlainEngine()
    bare = unwrap(model)
    device = resolve_device(cfg.device)
    home = _home_device(bare, device)
    layout = (torch.contiguous_format if engine.per_example
              else resolve_memory_format(cfg.memory_format, device))
    with frozen_parameters(bare, cfg.freeze_prefixes):
        seed_everything(cfg.seed)
        bare.to(device)
        model.train()
        with model_in_format(bare, layout):
            try:
                wrapped, batches = engine.wrap(model, loader, cfg, optimizer_state=optimizer_state, device=device)
                loss_fn = MPDRMLoss.from_configs(bare.config, cfg, per_example=engine.per_example)
                pairs = proximal_pairs(bare, reference_params, cfg, device)
                start = time.perf_counter()
                tally = run_steps(wrapped, batches, cfg, engine, loss_fn, pairs, device, layout)
                seconds = time.perf_counter() - start
            finally:
                engine.unwrap()
        metrics = tally.means()
        metrics.update({"proximal": proximal_term(pairs, cfg.proximal_mu), "lr": tally.lr, "seconds": seconds,
                        "examples_per_second": tally.seen / seconds if seconds > 0 else float("nan")})
        result = TrainResult(metrics=metrics, optimizer_state=contiguous_tensors(engine.optimizer_state()),
                             num_examples=_num_examples(batches, tally.first_epoch_examples), steps=tally.steps)
    bare.to(home)
    return result


#: How the personality embedding p of a scored clip is chosen (see :func:`predict`).
PERSONALITY_MODES = ("clip", "subject_mean", "reference")


def subject_means(bare: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]],
                  device: torch.device, layout: torch.memory_format = torch.contiguous_format,
                  ) -> dict[int, torch.Tensor]:
    """Subject index -> the normalised mean personality embedding of its clips in ``loader``."""
    sums: dict[int, torch.Tensor] = {}
    for batch in loader:
        p = bare.personality_embedding(batch["clips"].to(device).contiguous(memory_format=layout))
        subj = batch["subject"].to(device)
        for s in torch.unique(subj).tolist():
            sel = p[subj == s].sum(0)
            sums[s] = sums[s] + sel if s in sums else sel
    return {s: torch.nn.functional.normalize(v, dim=0) for s, v in sums.items()}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], *, personality: str = "clip",
            device: str = "auto", reference: Iterable[Mapping[str, torch.Tensor]] | None = None,
            memory_format: str = "auto") -> dict[str, np.ndarray]:
    """Run the model over a loader. Returns numpy arrays: 'prediction' ((N,) scores, or (N, K) class
    probabilities), 'target', 'video', 'subject'.

    personality='clip': p from each clip itself. personality='subject_mean': a first pass embeds
    every clip, p = the normalised mean embedding of all the subject's clips in the loader (no
    labels used), and the second pass predicts with it. personality='reference': p = the
    normalised mean embedding of the subject's clips in ``reference`` (its training or
    enrolment visits: the person is known beforehand); every scored subject needs some.
    Models without MPFN ignore the choice. ``memory_format``: the layout the convolutions run
    in (:mod:`mpdrm.memory_format`; the model is back in the standard one afterwards)."""
    if personality not in PERSONALITY_MODES:
        raise ValueError(f"personality must be one of {PERSONALITY_MODES}, got {personality!r}")
    if personality == "reference" and reference is None:
        raise ValueError("personality='reference' needs the reference clips (reference=...)")
    bare = unwrap(model)
    dev = resolve_device(device)
    try:
        home = next(bare.parameters()).device
    except StopIteration:
        home = dev
    was_training = bare.training
    layout = resolve_memory_format(memory_format, dev)
    bare.to(dev).eval()
    try:
        with model_in_format(bare, layout):
            return _predict_batches(bare, loader, personality, dev, reference, layout)
    finally:
        bare.to(home)
        bare.train(was_training)


def _predict_batches(bare: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], personality: str,
                     dev: torch.device, reference: Iterable[Mapping[str, torch.Tensor]] | None,
                     layout: torch.memory_format) -> dict[str, np.ndarray]:
    """:func:`predict`'s passes over the batches, the model already on ``dev`` in ``layout``."""
    means: dict[int, torch.Tensor] = {}
    if personality != "clip" and bare.personality is not None:
        means = subject_means(bare, loader if personality == "subject_mean" else reference, dev, layout)
    preds, targets, videos, subjects = [], [], [], []
    for batch in loader:
        clips = batch["clips"].to(dev).contiguous(memory_format=layout)
        override = None
        if means:
            missing = sorted(set(batch["subject"].tolist()) - set(means))
            if missing:
                raise ValueError(f"no reference clips for subject index(es) {missing}")
            override = torch.stack([means[s] for s in batch["subject"].tolist()])
        out = bare(clips, personality=override)
        pred = out.prediction
        if bare.config.task == "classification":
            pred = pred.softmax(dim=-1)
        preds.append(pred.float().cpu())
        targets.append(batch["target"].cpu())
        videos.append(batch["video"].cpu())
        subjects.append(batch["subject"].cpu())
    if not preds:
        raise ValueError("the loader yielded no batches")
    return {
        "prediction": torch.cat(preds).numpy(),
        "target": torch.cat(targets).numpy(),
        "video": torch.cat(videos).numpy(),
        "subject": torch.cat(subjects).numpy(),
    }


def evaluate(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], *, task: str | None = None,
             personality: str = "clip", device: str = "auto",
             reference: Iterable[Mapping[str, torch.Tensor]] | None = None, offset: float = 0.0) -> dict[str, float]:
    """Video-level metrics (regression: rmse, mae, pcc, ccc and the error's split into a
    per-subject bias and the rest, `mpdrm.metrics.error_decomposition`; classification:
    accuracy, f1, auc) under plain names and clip-level ones prefixed ``clip_``, in units of
    the normalised target.
    `task` defaults to the model's; ``personality`` and ``reference`` as in :func:`predict`;
    ``offset`` is added to every regression score first (a site's calibration, `mpdrm.calibration`)."""
    task = task or unwrap(model).config.task
    out = predict(model, loader, personality=personality, device=device, reference=reference)
    if offset and task == "regression":
        out["prediction"] = out["prediction"] + np.float32(offset)
    return clip_and_video_metrics(out["prediction"], out["target"], out["video"], task, subjects=out["subject"])


__all__ = ["TrainConfig", "TrainResult", "train_local", "PlainEngine", "TrainingEngine", "default_step",
           "make_optimizer", "lr_factor", "predict", "evaluate", "move_batch"]
