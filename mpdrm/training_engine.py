"""The optimisation side of one `mpdrm.training.train_local` call: one engine object.

`train_local` owns the loop (seeding, device, frozen parameters, learning-rate schedule,
FedProx, metrics); an engine owns everything between the loop and the optimizer:

1. ``wrap(model, loader, cfg, optimizer_state=..., device=...) -> (model, loader)``, once,
   after seeding, with the model on its device in train mode: build the optimizer, restore
   its state, and wrap model/optimizer/loader if the engine needs to (DP-SGD does).
2. ``set_lr(lr)`` and ``step(model, batch, loss_fn) -> parts`` per batch, with the wrapped
   model that ``wrap`` returned.
3. ``unwrap()``, once after the last step (also when training fails): leave the plain model
   clean for evaluation, checkpointing and the next round.
4. ``optimizer_state()``: the plain optimizer's state to carry to the next round.

`PlainEngine` is the ordinary optimizer step; ``mpdrm.privacy.PrivateEngine`` is DP-SGD.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping

import torch
from torch import nn

if TYPE_CHECKING:
    from .training import TrainConfig

Batch = Mapping[str, torch.Tensor]
LossFn = Callable[..., "tuple[torch.Tensor, Mapping[str, torch.Tensor]]"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (AdamW or SGD with momentum) over the trainable parameters, in
    `named_parameters` order (a wrapper such as Opacus's holds the same parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def restore_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any], cfg: TrainConfig,
                            device: torch.device) -> None:
    """Load a saved optimizer state, keep ``cfg``'s lr and weight decay, and move its tensors
    to ``device`` (a restored state may sit on another device)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
        group["weight_decay"] = cfg.weight_decay
        group.pop("initial_lr", None)
    for param_state in optimizer.state.values():
        for key, value in param_state.items():
            if torch.is_tensor(value) and key != "step":
                param_state[key] = value.to(device)


def optimizer_state_of(state: Mapping[str, Any], model: nn.Module, keep: Collection[str]) -> dict[str, Any]:
    """``state`` (a saved optimizer state over ``model``'s trainable parameters, in
    `named_parameters` order) with the per-parameter entries of the names not in ``keep``
    dropped: those parameters start the next round with fresh moments and step count."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    kept = {i for i, n in enumerate(names) if n in set(keep)}
    return {**state, "state": {i: v for i, v in state.get("state", {}).items() if int(i) in kept}}


def default_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                 grad_clip: float | None) -> Mapping[str, torch.Tensor]:
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


class TrainingEngine(ABC):
    """Builds, wraps, steps and unwraps for `train_local` (see the module docstring).

    Attributes
    ----------
    per_example : bool
        Whether the loss must be per-example (no batch coupling); `train_local` builds
        ``MPDRMLoss(per_example=...)`` from it.
    """

    per_example: bool = False

    @abstractmethod
    def wrap(self, model: nn.Module, loader: Iterable[Batch], cfg: TrainConfig, *,
             optimizer_state: Mapping[str, Any] | None, device: torch.device) -> tuple[nn.Module, Iterable[Batch]]:
        """Build the optimizer (restoring ``optimizer_state``); return the model and loader to train with."""

    @abstractmethod
    def set_lr(self, lr: float) -> None:
        """Set the learning rate of the next step."""

    @abstractmethod
    def step(self, model: nn.Module, batch: Batch, loss_fn: LossFn) -> Mapping[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns the loss parts (may be empty)."""

    def unwrap(self) -> None:
        """Undo ``wrap``'s wrapping (nothing by default). Safe to call when ``wrap`` failed."""

    @abstractmethod
    def optimizer_state(self) -> dict[str, Any]:
        """The plain optimizer's state dict."""


class PlainEngine(TrainingEngine):
    """The ordinary step: ``cfg.optimizer`` (AdamW/SGD), global gradient-norm clipping at
    ``cfg.grad_clip``, no wrapping."""

    def __init__(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self.grad_clip: float | None = None

    def wrap(self, model: nn.Module, loader: Iterable[Batch], cfg: TrainConfig, *,
             optimizer_state: Mapping[str, Any] | None, device: torch.device) -> tuple[nn.Module, Iterable[Batch]]:
        self.optimizer = make_optimizer(model, cfg)
        if optimizer_state:
            restore_optimizer_state(self.optimizer, optimizer_state, cfg, device)
        self.grad_clip = cfg.grad_clip
        return model, loader

    def set_lr(self, lr: float) -> None:
        for group in self._optimizer().param_groups:
            group["lr"] = lr

    def step(self, model: nn.Module, batch: Batch, loss_fn: LossFn) -> Mapping[str, torch.Tensor]:
        return default_step(model, batch, self._optimizer(), loss_fn, self.grad_clip)

    def optimizer_state(self) -> dict[str, Any]:
        return self._optimizer().state_dict()

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("the engine has no optimizer yet: call wrap() first")
        return self.optimizer


__all__ = ["TrainingEngine", "PlainEngine", "make_optimizer", "restore_optimizer_state", "default_step"]
