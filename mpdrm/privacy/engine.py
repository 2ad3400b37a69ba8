"""Wrap one site's model, optimizer and loader for DP-SGD with Opacus."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from opacus import PrivacyEngine
from opacus.data_loader import CollateFnWithEmpty, DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader

from .accounting import SiteAccountant
from .config import GRAD_SAMPLE_MODES
from .per_sample_layers import use_per_sample_layers
from .naming import plain_state_dict, unwrap_model


def check_hooks_mode(model: torch.nn.Module, grad_sample_mode: str) -> None:
    """Refuse Opacus's ``hooks`` mode for convolutions it gets wrong.

    Opacus 1.6's convolution grad sampler pads with zeros whatever the layer's
    ``padding_mode``: with ``reflect``, ``replicate`` or ``circular`` padding its per-sample
    gradients are not the layer's (``tests/dp/test_clipping.py``). ``grouped``, ``ew`` and
    ``functorch`` handle them.

    Raises
    ------
    ValueError
        Naming the convolutions with a non-zero padding mode.
    """
    if grad_sample_mode != "hooks":
        return
    padded = [name for name, m in model.named_modules()
              if isinstance(m, torch.nn.modules.conv._ConvNd) and m.padding_mode != "zeros"]
    if padded:
        raise ValueError(
            f"grad_sample_mode 'hooks' computes wrong per-sample gradients for convolutions with a "
            f"padding_mode other than 'zeros' (Opacus 1.6): {padded[:8]}; use 'grouped', 'ew' or 'functorch'"
        )


def check_coverage(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Require the optimizer to hold exactly the model's trainable parameters.

    The guarantee needs DP-SGD over every trainable parameter at the site (the local
    personality branch sees the same data as the shared one).

    Raises
    ------
    ValueError
        Naming the trainable parameters that the optimizer lacks, or counting the
        optimizer parameters that are not trainable parameters of the model.
    """
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(name for pid, name in trainable.items() if pid not in in_optimizer)
    if missing:
        raise ValueError(
            "DP-SGD must cover every trainable parameter at the site, but the optimizer lacks "
            f"{len(missing)}: {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    extra = in_optimizer - set(trainable)
    if extra:
        raise ValueError(
            f"the optimizer holds {len(extra)} tensors that are not trainable parameters of the model"
        )


def accounting_sample_rate(loader: Any) -> float:
    """The sample rate Opacus records per step for a plain ``loader`` made private.

    Opacus samples with rate ``1 / len(loader)`` and takes ``int(1 / rate)`` steps per
    epoch, then accounts each step at ``1 / steps_per_epoch``; this returns that same
    float, so a look-ahead before wrapping matches the accountant exactly. A loader that
    samples by itself (``mpdrm.privacy.patients.PatientPoissonLoader``) states its rate.
    """
    own = getattr(loader, "sample_rate", None)
    if own is not None:
        return float(own)
    if len(loader) < 1:
        raise ValueError("the training loader is empty")
    return 1 / int(1 / (1 / len(loader)))


def is_empty_batch(batch: Any) -> bool:
    """Whether a (Poisson-sampled) batch holds no examples.

    Works for a tensor, a dict of tensors (the ``mpdrm`` batch) and a list/tuple.
    """
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] == 0
    if isinstance(batch, dict):
        values = list(batch.values())
    elif isinstance(batch, (list, tuple)):
        values = list(batch)
    else:
        raise TypeError(f"cannot tell the size of a batch of type {type(batch).__name__}")
    tensors = [v for v in values if isinstance(v, torch.Tensor) and v.dim() > 0]
    return bool(tensors) and all(t.shape[0] == 0 for t in tensors)


def prime_empty_batches(loader: DPDataLoader) -> None:
    """Make an empty Poisson batch keep the dataset's batch structure from the start.

    Opacus learns the structure of an empty batch from the first non-empty one; if the
    very first batch is empty, it builds a list from ``dataset[0]`` that fails for
    dict examples (Opacus 1.6). Priming it with one collated example fixes that.
    """
    collate = loader.collate_fn
    if isinstance(collate, CollateFnWithEmpty) and collate.first_batch is None and len(loader.dataset) > 0:
        example = [loader.dataset[0]]
        fn = collate.wrapped_collator_fn
        collate.first_batch = fn(example) if fn is not None else example


def noise_only_step(optimizer: DPOptimizer) -> None:
    """Take a DP step for an empty Poisson batch: the update is pure noise, and it counts.

    Skipping the step instead would reveal that the batch was empty and break the
    accounting; and a forward pass on zero examples fails in 'ew' mode. The previous
    step's sums are cleared first (Opacus refuses to noise an already processed sum).
    """
    optimizer.zero_grad(set_to_none=True)
    for p in optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def private_step(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    optimizer: DPOptimizer,
    loss_fn: Callable[[Any, Mapping[str, torch.Tensor]], tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
) -> Mapping[str, torch.Tensor]:
    """One DP-SGD step (``PrivateEngine.step``): per-example clipping, noise, accounting.

    ``loss_fn(output, batch) -> (mean loss, parts)`` must be per-example
    (``MPDRMLoss(per_example=True)``). An empty batch takes :func:`noise_only_step`
    and returns no parts. There is no global gradient clipping: DP-SGD clips per example.
    """
    if is_empty_batch(batch):
        noise_only_step(optimizer)
        return {}
    optimizer.zero_grad(set_to_none=True)
    loss, parts = loss_fn(model(batch["clips"]), batch)
    loss.backward()
    optimizer.step()
    return parts


@dataclass
class PrivateTraining:
    """A site's model, optimizer and loader made private for one round.

    Train with ``model`` (forward), ``optimizer`` (``zero_grad``/``step``) and
    ``loader`` (Poisson batches) exactly like their plain counterparts, with a loss
    that is the batch *mean* of per-example losses. For an empty Poisson batch call
    :meth:`noise_only_step` instead of forward/backward. Afterwards call
    :meth:`close`; the plain ``module`` holds the trained weights. ``PrivateEngine`` does
    all of this inside ``mpdrm.training.train_local``.

    Attributes
    ----------
    model
        Opacus ``GradSampleModule`` around ``module`` (state_dict keys gain ``_module.``).
    optimizer
        Opacus ``DPOptimizer``: clips per example, adds noise, steps the accountant.
    loader
        Opacus ``DPDataLoader`` with Poisson sampling at ``sample_rate``.
    module
        The plain model (same parameter tensors).
    noise_multiplier, max_grad_norm, sample_rate
        The mechanism's parameters.
    """

    model: torch.nn.Module
    optimizer: DPOptimizer
    loader: DPDataLoader
    module: torch.nn.Module
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    restore: Callable[[], None] = lambda: None
    #: ``step(model, batch, optimizer, loss_fn)``: :func:`private_step` (a clip per row) or
    #: ``mpdrm.privacy.patients.patient_private_step`` (a patient per row).
    step: Callable[..., Mapping[str, torch.Tensor]] = private_step
    closed: bool = field(default=False, init=False)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the Poisson loader."""
        return len(self.loader)

    def noise_only_step(self) -> None:
        """:func:`noise_only_step` on this round's optimizer (for an empty batch)."""
        noise_only_step(self.optimizer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state with plain parameter names (no ``_module.``)."""
        return plain_state_dict(self.model)

    def close(self) -> torch.nn.Module:
        """Remove Opacus hooks and per-sample attributes; return the plain model.

        Closing again does nothing more.
        """
        if self.closed:
            return self.module
        self.closed = True
        self.optimizer.zero_grad(set_to_none=True)
        self.restore()
        if hasattr(self.model, "to_standard_module"):
            return self.model.to_standard_module()
        return unwrap_model(self.model)


def check_private_ready(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
                        grad_sample_mode: str, *, sampled_by_loader: bool = False) -> None:
    """Refuse what :func:`make_private` cannot make private correctly.

    Raises
    ------
    ValueError
        For an unknown ``grad_sample_mode``, an already wrapped model, a loader with a custom
        batch sampler (its batches are not Poisson samples), an optimizer that does not cover
        the trainable parameters (:func:`check_coverage`), ``hooks`` mode on convolutions it gets
        wrong (:func:`check_hooks_mode`) or a model Opacus's validator refuses.
        ``sampled_by_loader``: the loader does its own Poisson sampling (patient level).
    """
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
    if unwrap_model(model) is not model:
        raise ValueError("model is already wrapped by Opacus; pass the plain model")
    if loader.batch_size is None and not sampled_by_loader:
        raise ValueError(
            "DP-SGD needs a plain DataLoader(dataset, batch_size=B): batches from a custom "
            "batch sampler are not Poisson samples and the accounting would not hold"
        )
    check_coverage(model, optimizer)
    check_hooks_mode(model, grad_sample_mode)
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-ready for Opacus: {errors}")


def site_privacy_engine(accountant: SiteAccountant, secure_mode: bool) -> PrivacyEngine:
    """An Opacus ``PrivacyEngine`` whose steps go to the site's ledger ``accountant``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant.mechanism, secure_mode=secure_mode)
    engine.accountant = accountant.accountant
    return engine


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    accountant: SiteAccountant,
    noise_multiplier: float,
    max_grad_norm: float,
    grad_sample_mode: str = "grouped",
    noise_generator: torch.Generator | None = None,
    secure_mode: bool = False,
) -> PrivateTraining:
    """Make one site's training differentially private with Opacus.

    Parameters
    ----------
    model
        The plain site model (DP-ready: GroupNorm, no BatchNorm), not yet wrapped.
    optimizer
        Optimizer over *all* trainable parameters of ``model`` (checked).
    loader
        A plain ``DataLoader(dataset, batch_size=B)``; its expected batch size sets the
        Poisson sample rate ``1 / len(loader)``. Custom batch samplers (e.g. P x K) are
        refused: their batches are not Poisson samples.
    accountant
        The site's ledger; every DP step is recorded in it.
    noise_multiplier, max_grad_norm
        Gaussian noise std / C, and the per-example clipping bound C.
    grad_sample_mode
        ``"grouped"`` (Opacus hooks, with :mod:`mpdrm.privacy.per_sample_layers` for the
        convolutions and GroupNorms: fastest on MPDRM), ``"ew"``, ``"hooks"`` or ``"functorch"``.
    noise_generator
        Generator for the noise (reproducibility); ``None`` uses torch's global RNG.
    secure_mode
        Opacus secure RNG for noise and sampling.

    Returns
    -------
    PrivateTraining
    """
    check_private_ready(model, optimizer, loader, grad_sample_mode)
    return wrap_private(model, optimizer, loader, accountant=accountant, noise_multiplier=noise_multiplier,
                        max_grad_norm=max_grad_norm, grad_sample_mode=grad_sample_mode,
                        noise_generator=noise_generator, secure_mode=secure_mode)


def wrap_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    *,
    accountant: SiteAccountant,
    noise_multiplier: float,
    max_grad_norm: float,
    grad_sample_mode: str,
    noise_generator: torch.Generator | None,
    secure_mode: bool = False,
    sample_rate: float | None = None,
) -> PrivateTraining:
    """Opacus's wrapping for :func:`make_private` (checked inputs).

    ``sample_rate=None``: Opacus Poisson-samples records from the plain ``loader``.
    Otherwise ``loader`` samples by itself at ``sample_rate`` (it is used as is) and the
    accountant records that rate for every step; the optimizer refuses a second backward
    pass per step either way.
    """
    engine = site_privacy_engine(accountant, secure_mode)
    own_sampling = sample_rate is not None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PrivacyEngine detected new dataset object")
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=float(noise_multiplier),
            max_grad_norm=float(max_grad_norm),
            poisson_sampling=not own_sampling,
            grad_sample_mode="hooks" if grad_sample_mode == "grouped" else grad_sample_mode,
            noise_generator=None if secure_mode else noise_generator,
        )
    if own_sampling:
        private_model.forbid_grad_accumulation()
    else:
        prime_empty_batches(private_loader)
    restore = use_per_sample_layers(private_model) if grad_sample_mode == "grouped" else (lambda: None)
    return PrivateTraining(
        model=private_model,
        optimizer=private_optimizer,
        loader=private_loader,
        module=model,
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        sample_rate=float(sample_rate) if own_sampling else 1 / len(private_loader),
        restore=restore,
    )
