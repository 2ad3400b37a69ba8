"""Patient-level DP-SGD (``dp.unit=patient``) on the real MPDRM (tiny): the per-patient
clipped sum against a reference loop, the sampler's neighbouring-dataset property, the
accounting against an independent computation, and the site's delta rule."""
from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from torch.utils.data import Subset

from client.privacy import PrivateRound
from mpdrm.privacy import (
    DPConfig,
    PatientPoissonLoader,
    SiteAccountant,
    SitePrivacy,
    make_patient_private,
    make_private,
    patient_private_step,
    sum_by_patient,
)
from tests.dp.conftest import ClipDataset, build_tiny, dp_loss, mean_loss

pytestmark = pytest.mark.dp

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


class PatientClips(ClipDataset):
    """The DP tests' clip dataset with the ``subjects`` list a site's dataset has."""

    def __init__(self, n: int = 18, patients: int = 6, seed: int = 0) -> None:
        super().__init__(n=n, seed=seed)
        self.subject = torch.arange(n) % patients
        self.subjects = [int(s) for s in self.subject]


class Without(Subset):
    """``dataset`` without one patient's clips (a neighbouring dataset)."""

    def __init__(self, dataset: PatientClips, patient: int) -> None:
        keep = [i for i, s in enumerate(dataset.subjects) if s != patient]
        super().__init__(dataset, keep)
        self.subjects = [dataset.subjects[i] for i in keep]


def _double_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def _reference_patient_sum(model, batch, bound):
    """Per patient: the sum of its clips' gradients, clipped to ``bound``; summed over patients."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for patient in torch.unique(batch["subject"]):
        rows = batch["subject"] == patient
        own = {k: v[rows] for k, v in batch.items()}
        loss = mean_loss(model, own) * int(rows.sum())  # sum of the clips' losses
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, bound / (float(norm) + 1e-6))  # Opacus's clipping factor
        for t, g in zip(total, grads):
            t += factor * g
        norms.append(float(norm))
    return total, norms


@pytest.fixture
def patients() -> PatientClips:
    return PatientClips()


def _loader(patients: PatientClips, expected: float = 3.0) -> PatientPoissonLoader:
    return PatientPoissonLoader(patients, expected_patients=expected, clips_per_patient=3, seed=5)


def _wrapped(patients: PatientClips, bound: float, lr: float, expected: float = 3.0, model=None):
    model = build_tiny().double() if model is None else model
    loader = PatientPoissonLoader(patients, expected_patients=expected, clips_per_patient=3, seed=5)
    private = make_patient_private(model, torch.optim.SGD(model.parameters(), lr=lr), loader,
                                   accountant=SiteAccountant("rdp"), noise_multiplier=0.0, max_grad_norm=bound)
    return model, loader, private


def test_patient_step_equals_the_reference_loop_in_float64(patients: PatientClips) -> None:
    bound = 0.05
    model = build_tiny().double()
    batch = _double_batch(_loader(patients).collate([0, 6, 12, 1, 7, 3]))  # patients 0 (3 clips), 1 (2), 3 (1)
    reference, norms = _reference_patient_sum(model, batch, bound)  # before Opacus wraps the model
    assert len(norms) == 3 and max(norms) > bound, "bound too loose: clipping would not be exercised"
    model, loader, private = _wrapped(patients, bound, lr=1.0, model=model)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]

    patient_private_step(private.model, batch, private.optimizer, lambda out, b: dp_loss()(out, b))

    # SGD at lr 1 with no noise: the update is the clipped per-patient sum over E patients
    for b, p, ref in zip(before, params, reference):
        torch.testing.assert_close(b - p.detach(), ref / loader.expected_batch_size, rtol=0, atol=1e-8)
    private.close()


def test_every_patients_clipped_gradient_is_within_the_bound(patients: PatientClips) -> None:
    bound = 0.05
    _, loader, private = _wrapped(patients, bound, lr=0.0)
    params = private.optimizer.params
    for patient in range(3):
        batch = _double_batch(loader.collate([i for i, s in enumerate(patients.subjects) if s == patient]))
        private.optimizer.zero_grad(set_to_none=True)
        mean_loss(private.model, batch).backward()
        assert sum_by_patient(params, batch["subject"]) == 1
        raw = torch.sqrt(sum((p.grad_sample**2).sum() for p in params))
        private.optimizer.clip_and_accumulate()
        clipped = torch.sqrt(sum((p.summed_grad**2).sum() for p in params))
        assert raw > bound and clipped <= bound * (1 + 1e-9)
    private.close()


def test_sum_by_patient_groups_rows_and_leaves_absent_patients_out() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    assert sum_by_patient([param], torch.tensor([7, 3, 7, 9])) == 3
    torch.testing.assert_close(param.grad_sample, torch.tensor([[0.0, 1.0], [3.0, 2.0], [5.0, 5.0]]))


def test_removing_a_patient_changes_the_batches_only_through_that_patient(patients: PatientClips) -> None:
    def identities(dataset, epochs: int = 4) -> list[list[tuple[int, int]]]:
        loader = PatientPoissonLoader(dataset, expected_patients=2.0, clips_per_patient=2, seed=11, sample_rate=1 / 3)
        return [[(int(s), int(v)) for s, v in zip(b["subject"], b["video"])] for _ in range(epochs) for b in loader]

    full, neighbour = identities(patients), identities(Without(patients, 4))
    assert len(full) == len(neighbour) == 4 * 3  # q = 1/3 with 6 patients and with 5
    assert [[c for c in batch if c[0] != 4] for batch in full] == neighbour
    assert any(c[0] == 4 for batch in full for c in batch), "patient 4 was never sampled"
    sizes = [len({s for s, _ in batch}) for batch in full]
    assert 0 in sizes or min(sizes) < max(sizes), "Poisson sampling should vary the number of patients"


def test_an_empty_step_after_a_full_one_is_a_counted_noise_only_step(patients: PatientClips) -> None:
    model, loader, private = _wrapped(patients, 0.05, lr=1.0)
    private.optimizer.noise_multiplier = 1.0
    batch = _double_batch(loader.collate([0, 1]))
    steps = private.optimizer  # the accountant hook counts every optimizer step
    patient_private_step(private.model, batch, steps, lambda out, b: dp_loss()(out, b))
    empty = _double_batch(loader.collate([]))
    assert empty["clips"].shape[0] == 0 and set(empty) == set(batch)
    before = [p.detach().clone() for p in model.parameters()]
    patient_private_step(private.model, empty, steps, lambda out, b: dp_loss()(out, b))
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    private.close()


def test_clip_level_empty_batch_after_a_full_one_also_steps(dataset, loader) -> None:
    model = build_tiny()
    private = make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), loader,
                           accountant=SiteAccountant("rdp"), noise_multiplier=1.0, max_grad_norm=1.0)
    batch = next(iter(private.loader))
    private.step(private.model, batch, private.optimizer, lambda out, b: dp_loss()(out, b))
    private.noise_only_step()  # used to fail: the previous sum was still marked processed
    private.close()


def _rdp_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)
    return float(get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)[0])


def _train_round(site: SitePrivacy, patients: PatientClips, seed: int) -> int:
    loader = PatientPoissonLoader(patients, expected_patients=2.0, clips_per_patient=2, seed=seed)
    assert site.plan_round(loader).allowed
    model = build_tiny()
    private = site.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), loader)
    for batch in private.loader:
        private.step(private.model, batch, private.optimizer, lambda out, b: dp_loss()(out, b))
    return site.finish()["steps_round"]


def test_patient_epsilon_matches_an_independent_accountant_across_rounds_and_restarts(patients) -> None:
    cfg = DPConfig(noise_multiplier=1.3, max_grad_norm=1.0, delta=1e-3, accountant="rdp")
    site = SitePrivacy(cfg)
    first = _train_round(site, patients, seed=1)
    assert first == 3 and site.accountant.history == [(1.3, 1 / 3, 3)]
    assert math.isclose(site.epsilon(), _rdp_epsilon(1 / 3, 1.3, 3, 1e-3), rel_tol=1e-9)

    restarted = SitePrivacy(cfg, state=site.state_dict())  # the site process restarts
    second = _train_round(restarted, patients, seed=2)
    assert restarted.accountant.steps == first + second == 6
    assert math.isclose(restarted.epsilon(), _rdp_epsilon(1 / 3, 1.3, 6, 1e-3), rel_tol=1e-9)
    assert restarted.epsilon() > site.epsilon()


def test_the_site_refuses_a_delta_not_below_one_over_its_patients(patients: PatientClips) -> None:
    cfg = DPConfig(noise_multiplier=1.0, delta=0.2)  # 6 patients: 1/6 < 0.2
    with pytest.raises(ValueError, match=r"dp.delta=0.2 is not below 1/6 \(the site has 6 patients\)"):
        PrivateRound(cfg, None, patients, batch_size=8, epochs=1, max_steps=None, seed=0)
    ok = PrivateRound(DPConfig(noise_multiplier=1.0, delta=0.1), None, patients, batch_size=8, epochs=1,
                      max_steps=None, seed=0)
    assert isinstance(ok.loader, PatientPoissonLoader) and ok.loader.sample_rate == 1 / 3  # 8 // 4 = 2 of 6
    metrics = ok.metrics()
    assert metrics["dp-patient-level"] == 1.0 and metrics["dp-patients"] == 6.0
    clip = PrivateRound(DPConfig(noise_multiplier=1.0, delta=0.01, unit="clip"), None, patients, batch_size=6,
                        epochs=1, max_steps=None, seed=0)
    assert clip.metrics()["dp-patient-level"] == 0.0 and clip.loader.batch_size == 6
