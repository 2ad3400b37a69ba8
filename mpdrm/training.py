"""One site's local training loop and its evaluation.

Batches are dicts (docs/interfaces.md): ``clips`` (B,C,T,H,W) float32, ``target`` (B,) float32
normalised score or int64 class, ``subject`` (B,) int64, ``visit`` (B,) int64, ``video`` (B,) int64.

`train_local` is written so that the privacy layer reuses it instead of copying it:

- ``prepare(model, optimizer, loader) -> (model, optimizer, loader)`` is called once the
  optimizer exists (and its state is restored); it may wrap all three, e.g.
  ``lambda m, o, l: privacy_engine.make_private(module=m, optimizer=o, data_loader=l, ...)``.
  When it is given, the loop does no gradient clipping of its own (DP-SGD clips per example)
  and the loss is per-example (prototype contrastive, no batch coupling) unless told otherwise.
- ``step_fn(model, batch, optimizer, loss_fn, grad_clip) -> parts`` replaces one optimisation
  step (default: `default_step`).
- ``finish(model, optimizer)`` runs after the last step with the prepared objects. The default
  closes an Opacus wrapper (``_close()``: removes its hooks and ``grad_sample`` attributes), so the
  bare model is clean for evaluation, checkpointing and the next round's ``make_private`` (a
  PrivacyEngine kept across rounds keeps accumulating its accountant history).
- The FedProx proximal term is applied as a decoupled step after each optimizer step,
  ``w <- w - lr_t * mu * (w - w_ref)`` for the parameters named in ``reference_params``: for SGD
  this is exactly the gradient of ``mu/2 ||w - w_ref||^2``; for AdamW it is decoupled like AdamW's
  weight decay. It uses no data, so under DP-SGD it is post-processing and costs no privacy.
- The learning-rate schedule runs over this call's steps (``epochs * len(loader)``, or
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
from .device import resolve_device, seed_everything
from .losses import MPDRMLoss
from .metrics import clip_and_video_metrics
from .partition import unwrap

SCHEDULES = ("cosine", "step", "none")
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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.contrastive not in ("supcon", "prototype"):
            raise ValueError(f"contrastive must be supcon or prototype, got {self.contrastive!r}")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"loss must be mse or huber, got {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def freeze_prefixes(self) -> tuple[str, ...]:
        """``freeze`` as prefixes: comma-separated, or a JSON list (a Hydra list flattened by
        ``client.runconfig.flatten``)."""
        text = self.freeze.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return tuple(str(p).strip() for p in items if str(p).strip())


@dataclass
class TrainResult:
    metrics: dict[str, float]
    optimizer_state: dict[str, Any]
    num_examples: int
    steps: int


StepFn = Callable[[nn.Module, Mapping[str, torch.Tensor], torch.optim.Optimizer, Callable, "float | None"],
                  Mapping[str, torch.Tensor]]
Prepare = Callable[[nn.Module, torch.optim.Optimizer, Iterable], tuple[nn.Module, torch.optim.Optimizer, Iterable]]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (AdamW or SGD with momentum) over the trainable parameters, in
    `named_parameters` order."""
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiplier of cfg.lr at `step` (0-based) of `total_steps`."""
    if cfg.schedule == "cosine" and total_steps > 0:
        progress = min(step / total_steps, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.step_gamma ** (epoch // max(cfg.step_size, 1))
    return 1.0


def move_batch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def default_step(model: nn.Module, batch: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                 loss_fn: Callable, grad_clip: float | None) -> Mapping[str, torch.Tensor]:
    """zero_grad -> forward -> loss -> backward -> (clip) -> step. Returns the loss parts."""
    optimizer.zero_grad(set_to_none=True)
    output = model(batch["clips"])
    loss, parts = loss_fn(output, batch)
    loss.backward()
    if grad_clip is not None and grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return parts


def _reset_hparams(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    for g in optimizer.param_groups:
        g["lr"] = cfg.lr
        g["weight_decay"] = cfg.weight_decay
        g.pop("initial_lr", None)


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


def train_local(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    cfg: TrainConfig,
    *,
    optimizer_state: dict[str, Any] | None = None,
    reference_params: Mapping[str, torch.Tensor] | None = None,
    prepare: Prepare | None = None,
    step_fn: StepFn | None = None,
    loss_fn: Callable | None = None,
    per_example: bool | None = None,
    finish: Callable[[nn.Module, torch.optim.Optimizer], None] | None = None,
) -> TrainResult:
    """Train `model` in place on one site's batches; returns metrics and the optimizer state.

    metrics: the example-weighted means of 'loss', 'task', 'contrastive', 'orthogonality' over the
    steps, 'proximal' (mu/2 ||w - w_ref||^2 at the end), 'lr' (last), 'seconds',
    'examples_per_second'. num_examples: the loader's dataset size when it has one (else the
    examples of the first epoch). The model is returned to the device it came on.
    """
    if cfg.keep_freed_memory:
        keep_freed_memory()
    bare = unwrap(model)
    device = resolve_device(cfg.device)
    try:
        home = next(bare.parameters()).device
    except StopIteration:
        home = device
    with frozen_parameters(bare, cfg.freeze_prefixes):
        seed_everything(cfg.seed)
        bare.to(device)
        model.train()

        optimizer = make_optimizer(bare, cfg)
        if optimizer_state:
            optimizer.load_state_dict(optimizer_state)
            _reset_hparams(optimizer, cfg)
            # a restored state may sit on another device
            for state in optimizer.state.values():
                for k, v in state.items():
                    if torch.is_tensor(v) and k != "step":
                        state[k] = v.to(device)
        base_optimizer = optimizer
        try:
            steps_per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError:
            steps_per_epoch = 0
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps) if total_steps else cfg.max_steps

        if prepare is not None:
            model, optimizer, loader = prepare(model, optimizer, loader)
        if per_example is None:
            per_example = prepare is not None
        if loss_fn is None:
            loss_fn = MPDRMLoss.from_configs(bare.config, cfg, per_example=per_example)
        step_fn = step_fn or default_step
        grad_clip = None if prepare is not None else cfg.grad_clip

        ref: list[tuple[torch.Tensor, torch.Tensor]] = []
        if reference_params is not None and cfg.proximal_mu > 0:
            named = dict(bare.named_parameters())
            ref = [(named[k], v.detach().to(device, named[k].dtype)) for k, v in reference_params.items()
                   if k in named and named[k].requires_grad]

        sums: dict[str, float] = {}
        seen = 0
        first_epoch_examples = 0
        steps = 0
        lr = cfg.lr
        start = time.perf_counter()
        done = False
        for epoch in range(cfg.epochs):
            for batch in loader:
                if cfg.max_steps is not None and steps >= cfg.max_steps:
                    done = True
                    break
                lr = cfg.lr * lr_factor(cfg, steps, total_steps, steps_per_epoch)
                for g in base_optimizer.param_groups:
                    g["lr"] = lr
                batch = move_batch(batch, device)
                b = _batch_size(batch)
                parts = step_fn(model, batch, optimizer, loss_fn, grad_clip)
                if ref:
                    with torch.no_grad():
                        for p, r in ref:
                            p.sub_(lr * cfg.proximal_mu * (p - r))
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * b
                seen += b
                if epoch == 0:
                    first_epoch_examples += b
                steps += 1
            if done:
                break
        seconds = time.perf_counter() - start
        if finish is not None:
            finish(model, optimizer)
        elif model is not bare and hasattr(model, "_close"):
            model._close()

        metrics = {k: (v / seen if seen else float("nan")) for k, v in sums.items()}
        prox = 0.0
        if ref:
            with torch.no_grad():
                prox = float(sum(((p - r) ** 2).sum() for p, r in ref)) * cfg.proximal_mu / 2
        metrics.update({"proximal": prox, "lr": lr, "seconds": seconds,
                        "examples_per_second": seen / seconds if seconds > 0 else float("nan")})
        dataset = getattr(loader, "dataset", None)
        try:
            num_examples = len(dataset) if dataset is not None else first_epoch_examples  # type: ignore[arg-type]
        except TypeError:
            num_examples = first_epoch_examples
        opt_state = getattr(optimizer, "original_optimizer", base_optimizer).state_dict()
        bare.to(home)
        return TrainResult(metrics=metrics, optimizer_state=opt_state, num_examples=int(num_examples), steps=steps)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], *, personality: str = "clip",
            device: str = "auto") -> dict[str, np.ndarray]:
    """Run the model over a loader. Returns numpy arrays: 'prediction' ((N,) scores, or (N, K) class
    probabilities), 'target', 'video', 'subject'.

    personality='clip': p from each clip itself. personality='subject_mean': a first pass embeds
    every clip, p = the normalised mean embedding of all the subject's clips in the loader (no
    labels used), and the second pass predicts with it. Models without MPFN ignore the choice."""
    if personality not in ("clip", "subject_mean"):
        raise ValueError(f"personality must be 'clip' or 'subject_mean', got {personality!r}")
    bare = unwrap(model)
    dev = resolve_device(device)
    try:
        home = next(bare.parameters()).device
    except StopIteration:
        home = dev
    was_training = bare.training
    bare.to(dev).eval()
    try:
        means: dict[int, torch.Tensor] = {}
        if personality == "subject_mean" and bare.personality is not None:
            sums: dict[int, torch.Tensor] = {}
            for batch in loader:
                p = bare.personality_embedding(batch["clips"].to(dev))
                subj = batch["subject"].to(dev)
                for s in torch.unique(subj).tolist():
                    sel = p[subj == s].sum(0)
                    sums[s] = sums[s] + sel if s in sums else sel
            means = {s: torch.nn.functional.normalize(v, dim=0) for s, v in sums.items()}
        preds, targets, videos, subjects = [], [], [], []
        for batch in loader:
            clips = batch["clips"].to(dev)
            override = None
            if means:
                override = torch.stack([means[s] for s in batch["subject"].tolist()])
            out = bare(clips, personality=override)
            pred = out.prediction
            if bare.config.task == "classification":
                pred = pred.softmax(dim=-1)
            preds.append(pred.float().cpu())
            targets.append(batch["target"].cpu())
            videos.append(batch["video"].cpu())
            subjects.append(batch["subject"].cpu())
    finally:
        bare.to(home)
        bare.train(was_training)
    if not preds:
        raise ValueError("the loader yielded no batches")
    return {
        "prediction": torch.cat(preds).numpy(),
        "target": torch.cat(targets).numpy(),
        "video": torch.cat(videos).numpy(),
        "subject": torch.cat(subjects).numpy(),
    }


def evaluate(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], *, task: str | None = None,
             personality: str = "clip", device: str = "auto") -> dict[str, float]:
    """Video-level metrics (regression: rmse, mae, pcc, ccc; classification: accuracy, f1, auc) under
    plain names and clip-level ones prefixed ``clip_``, in units of the normalised target.
    `task` defaults to the model's."""
    task = task or unwrap(model).config.task
    out = predict(model, loader, personality=personality, device=device)
    return clip_and_video_metrics(out["prediction"], out["target"], out["video"], task)


__all__ = ["TrainConfig", "TrainResult", "train_local", "default_step", "make_optimizer", "lr_factor",
           "predict", "evaluate", "move_batch"]
