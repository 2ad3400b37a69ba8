"""Patient-level DP-SGD: Poisson sampling of patients and one clipped gradient per patient.

The unit of privacy is a patient (a subject of the site's manifest), not a clip: each step
samples every patient independently with probability ``q``, takes up to
``clips_per_patient`` of a sampled patient's clips, and clips the *sum* of those clips'
gradients to ``C`` before the noisy sum. Neighbouring datasets differ by one patient's
every visit and clip, so the sampled Gaussian mechanism at rate ``q`` accounts exactly as
Opacus accounts a record; :class:`PatientPoissonLoader` exposes ``sample_rate`` for it.

Per-clip gradients come from the same Opacus machinery as record-level DP-SGD
(``GradSampleModule`` plus :mod:`mpdrm.privacy.per_sample_layers`); :func:`sum_by_patient`
turns them into per-patient gradients in place, before ``DPOptimizer`` clips.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import default_collate

from .accounting import SiteAccountant
from .engine import PrivateTraining, check_private_ready, is_empty_batch, noise_only_step, wrap_private

#: Batch key holding each clip's patient (the dataset's ``subject``).
PATIENT_KEY = "subject"


def _patient_rng(seed: int, epoch: int, step: int, patient: int) -> np.random.Generator:
    """The draw of one patient at one step: independent of every other patient's presence."""
    return np.random.default_rng([int(seed) % 2**63, epoch, step, int(patient) % 2**63])


class PatientPoissonLoader:
    """Batches of Poisson-sampled patients, up to ``clips_per_patient`` clips each.

    Parameters
    ----------
    dataset
        Clip dataset with ``subjects`` (one patient id per clip) and dict examples holding
        :data:`PATIENT_KEY` (``mpdrm.data.ClipDataset``).
    expected_patients : float
        Expected patients per step; the rate is ``q = 1 / round(patients / expected)``
        (at most 1), so an epoch is ``1 / q`` steps, as Opacus does for records. Like
        Opacus's record rate, ``q`` then depends on the number of patients, which the
        guarantee does not cover.
    clips_per_patient : int
        Clips taken from a sampled patient (all of them when it has fewer), chosen at random.
    seed : int
        Seed of the draws. Patient ``p``'s draw at a step depends only on
        ``(seed, epoch, step, p)``: removing another patient changes nothing else.
    sample_rate : float, optional
        A given ``q`` (``1 / q`` steps per epoch, rounded), instead of one derived from
        ``expected_patients``.

    Attributes
    ----------
    sample_rate : float
        ``q``, the patient-level sampling rate of every step.
    expected_batch_size : float
        ``patients * q``: what the noisy sum is divided by.
    """

    def __init__(self, dataset: Any, *, expected_patients: float, clips_per_patient: int, seed: int,
                 sample_rate: float | None = None) -> None:
        if clips_per_patient < 1:
            raise ValueError(f"clips_per_patient must be >= 1, got {clips_per_patient}")
        if not expected_patients > 0:
            raise ValueError(f"expected patients per step must be > 0, got {expected_patients}")
        subjects = np.asarray(dataset.subjects)
        if subjects.size == 0:
            raise ValueError("the training set has no clips")
        self.dataset = dataset
        self.patients = [int(p) for p in np.unique(subjects)]
        self._clips = {p: np.flatnonzero(subjects == p) for p in self.patients}
        if sample_rate is not None and not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        ratio = 1 / sample_rate if sample_rate is not None else len(self.patients) / float(expected_patients)
        self.steps_per_epoch = max(1, int(round(ratio)))
        self.sample_rate = 1.0 / self.steps_per_epoch
        self.expected_batch_size = len(self.patients) * self.sample_rate
        self.clips_per_patient = int(clips_per_patient)
        self.seed = int(seed)
        self.batch_size = None  # not a fixed-size loader
        self._epoch = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def draw(self, epoch: int, step: int) -> list[int]:
        """Dataset indices of one step's batch (patients in id order, clips in index order)."""
        chosen: list[int] = []
        for patient in self.patients:
            rng = _patient_rng(self.seed, epoch, step, patient)
            if rng.random() >= self.sample_rate:
                continue
            clips = self._clips[patient]
            take = min(self.clips_per_patient, len(clips))
            chosen.extend(int(i) for i in np.sort(clips[rng.choice(len(clips), size=take, replace=False)]))
        return chosen

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of ``indices``; an empty step keeps the batch structure with 0 rows."""
        if indices:
            return default_collate([self.dataset[i] for i in indices])
        template = default_collate([self.dataset[self._clips[self.patients[0]][0]]])
        return {k: v[:0] for k, v in template.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        for step in range(self.steps_per_epoch):
            yield self.collate(self.draw(epoch, step))


def sum_by_patient(params: Sequence[torch.nn.Parameter], patients: torch.Tensor) -> int:
    """Replace each parameter's per-clip ``grad_sample`` by per-patient sums, in place.

    Parameters
    ----------
    params
        The DP optimizer's parameters after ``backward`` (``grad_sample`` of shape (B, ...)).
    patients
        (B,) patient id of each clip of the batch.

    Returns
    -------
    int
        The number of patients in the batch (rows of every new ``grad_sample``).
    """
    _, group = torch.unique(patients, sorted=True, return_inverse=True)
    count = int(group.max()) + 1 if group.numel() else 0
    for p in params:
        per_clip = p.grad_sample
        if isinstance(per_clip, list):
            per_clip = torch.cat(per_clip, dim=0)
        per_patient = torch.zeros((count, *per_clip.shape[1:]), dtype=per_clip.dtype, device=per_clip.device)
        p.grad_sample = per_patient.index_add_(0, group.to(per_clip.device), per_clip)
    return count


def patient_private_step(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    optimizer: Any,
    loss_fn: Callable[[Any, Mapping[str, torch.Tensor]], tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
) -> Mapping[str, torch.Tensor]:
    """One patient-level DP-SGD step: per-clip gradients summed by patient, clipped, noised.

    Same contract as :func:`mpdrm.privacy.engine.private_step` (per-example mean loss; an
    empty batch takes a noise-only step that counts).
    """
    if is_empty_batch(batch):
        noise_only_step(optimizer)
        return {}
    optimizer.zero_grad(set_to_none=True)
    loss, parts = loss_fn(model(batch["clips"]), batch)
    loss.backward()
    sum_by_patient(optimizer.params, batch[PATIENT_KEY])
    optimizer.step()
    return parts


def make_patient_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: PatientPoissonLoader,
    *,
    accountant: SiteAccountant,
    noise_multiplier: float,
    max_grad_norm: float,
    grad_sample_mode: str = "grouped",
    noise_generator: torch.Generator | None = None,
) -> PrivateTraining:
    """Patient-level counterpart of :func:`mpdrm.privacy.engine.make_private`.

    The loader samples patients (its ``sample_rate`` is what the accountant records per
    step); the optimizer clips per patient (:func:`patient_private_step`) and divides the
    noisy sum by the expected number of patients per step. Opacus's secure RNG is not
    supported here (the patient draws use NumPy's generator).
    """
    check_private_ready(model, optimizer, loader, grad_sample_mode, sampled_by_loader=True)
    private = wrap_private(model, optimizer, loader, accountant=accountant, noise_multiplier=noise_multiplier,
                           max_grad_norm=max_grad_norm, grad_sample_mode=grad_sample_mode,
                           noise_generator=noise_generator, sample_rate=loader.sample_rate)
    private.optimizer.expected_batch_size = loader.expected_batch_size
    private.step = patient_private_step
    return private


__all__ = ["PATIENT_KEY", "PatientPoissonLoader", "make_patient_private", "patient_private_step", "sum_by_patient"]
