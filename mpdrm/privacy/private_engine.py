"""DP-SGD as a `mpdrm.training_engine.TrainingEngine`: the engine ``train_local`` takes under DP."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..training_engine import Batch, LossFn, PlainEngine, TrainingEngine
from .engine import PrivateTraining

if TYPE_CHECKING:
    from ..training import TrainConfig

#: ``attach(model, optimizer, loader) -> PrivateTraining``: e.g. ``SitePrivacy.attach`` or a
#: closure over :func:`mpdrm.privacy.make_private`.
Attach = Callable[[nn.Module, torch.optim.Optimizer, DataLoader], PrivateTraining]


class PrivateEngine(TrainingEngine):
    """DP-SGD with Opacus for one ``train_local`` call.

    ``wrap`` builds the plain optimizer like `PlainEngine` (``cfg.optimizer``, restored state)
    and hands model, optimizer and loader to ``attach``, which makes them private (per-sample
    gradients, Poisson loader, noise, accountant). Each step is the round's ``PrivateTraining.step``: :func:`private_step` (per-example
    clipping, no global clipping, a noise-only step for an empty batch); ``unwrap`` closes the
    round's :class:`PrivateTraining`, leaving the plain model without hooks or per-sample
    attributes. The loss is per-example.

    Parameters
    ----------
    attach
        Wraps the round's model, optimizer and loader; typically ``SitePrivacy.attach``
        (see ``SitePrivacy.engine``).
    """

    per_example = True

    def __init__(self, attach: Attach) -> None:
        self._attach = attach
        self._plain = PlainEngine()
        self.private: PrivateTraining | None = None

    def wrap(self, model: nn.Module, loader: Iterable[Batch], cfg: TrainConfig, *,
             optimizer_state: Mapping[str, Any] | None, device: torch.device) -> tuple[nn.Module, Iterable[Batch]]:
        self._plain.wrap(model, loader, cfg, optimizer_state=optimizer_state, device=device)
        self.private = self._attach(model, self._plain.optimizer, loader)  # type: ignore[arg-type]
        return self.private.model, self.private.loader

    def set_lr(self, lr: float) -> None:
        self._plain.set_lr(lr)  # the DP optimizer shares the plain one's param groups

    def step(self, model: nn.Module, batch: Batch, loss_fn: LossFn) -> Mapping[str, torch.Tensor]:
        if self.private is None:
            raise RuntimeError("the engine is not wrapped: call wrap() first")
        return self.private.step(model, batch, self.private.optimizer, loss_fn)

    def unwrap(self) -> None:
        if self.private is not None:
            self.private.close()

    def optimizer_state(self) -> dict[str, Any]:
        return self._plain.optimizer_state()


__all__ = ["Attach", "PrivateEngine"]
