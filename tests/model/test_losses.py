"""Losses against straightforward loop implementations."""
import math

import pytest
import torch

import mpdrm
from mpdrm.losses import (MPDRMLoss, orthogonality_loss, prototype_contrastive_loss, supervised_contrastive_loss,
                          task_loss)


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def supcon_reference(emb, subjects, visits, t):
    n = emb.shape[0]
    losses = []
    for i in range(n):
        same = [j for j in range(n) if j != i and subjects[j] == subjects[i]]
        if visits is None:
            pos, left_out = same, []
        else:
            cross = [j for j in same if visits[j] != visits[i]]
            pos, left_out = (cross, [j for j in same if j not in cross]) if cross else (same, [])
        if not pos:
            continue
        denom = [a for a in range(n) if a != i and a not in left_out]
        log_den = math.log(sum(math.exp(_cos(emb[i], emb[a]) / t) for a in denom))
        losses.append(-sum(_cos(emb[i], emb[p]) / t - log_den for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def prototype_reference(emb, weight, subjects, t):
    out = []
    for i in range(emb.shape[0]):
        s = subjects[i]
        if s < 0 or s >= weight.shape[0]:
            out.append(0.0)
            continue
        sims = [_cos(emb[i], weight[j]) / t for j in range(weight.shape[0])]
        out.append(-(sims[s] - math.log(sum(math.exp(v) for v in sims))))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("use_visits", [True, False])
def test_supcon_matches_loop(seed, use_visits):
    g = torch.Generator().manual_seed(seed)
    n = 12
    emb = torch.randn(n, 8, generator=g, dtype=torch.float64)
    subjects = torch.randint(0, 4, (n,), generator=g)
    visits = torch.randint(0, 3, (n,), generator=g) if use_visits else None
    t = [0.1, 0.5, 1.0][seed % 3]
    got = supervised_contrastive_loss(emb, subjects, visits, t)
    want = supcon_reference(emb, subjects.tolist(), None if visits is None else visits.tolist(), t)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_supcon_preferred_positive_rule():
    # subject 0: clips 0,1 at visit 0 and clip 2 at visit 1; subject 1: clips 3, 4 at visit 0 only
    emb = torch.randn(5, 4, dtype=torch.float64)
    subjects = torch.tensor([0, 0, 0, 1, 1])
    visits = torch.tensor([0, 0, 1, 0, 0])
    got = supervised_contrastive_loss(emb, subjects, visits, 0.2)
    want = supcon_reference(emb, subjects.tolist(), visits.tolist(), 0.2)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # no positives at all -> 0 and still differentiable
    e = torch.randn(3, 4, requires_grad=True)
    zero = supervised_contrastive_loss(e, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), 0.1)
    assert zero.item() == 0.0
    zero.backward()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_prototype_loss_matches_loop(seed, reduction):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(9, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=g, dtype=torch.float64)
    subjects = torch.randint(0, 5, (9,), generator=g)
    subjects[0] = -1  # unknown subject: contributes 0
    want = prototype_reference(emb, weight, subjects.tolist(), 0.3)
    got = prototype_contrastive_loss(emb, weight, subjects, 0.3, reduction)
    if reduction == "none":
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9)
    elif reduction == "sum":
        assert got.item() == pytest.approx(sum(want), rel=1e-9)
    else:
        assert got.item() == pytest.approx(sum(want) / len(want), rel=1e-9)


def test_model_prototype_similarity_equals_functional_form():
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=6, image_size=32, frames=8).eval()
    out = model(torch.randn(3, 1, 8, 32, 32))
    subjects = torch.tensor([0, 5, 2])
    w = model.personality.prototypes.weight
    direct = prototype_contrastive_loss(out.personality, w, subjects, 0.1, "none")
    parts_loss = MPDRMLoss(per_example=True, lambda_c=1.0, lambda_o=0.0)
    batch = {"target": out.prediction.detach(), "subject": subjects}  # task loss 0
    per, _ = parts_loss(out, batch, reduction="none")
    assert torch.allclose(per, direct, atol=1e-5)


def test_orthogonality():
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    d, p = q[:, :8].T * 3.0, q[:, 8:].T  # rows pairwise orthogonal
    assert orthogonality_loss(d, p).item() == pytest.approx(0.0, abs=1e-20)
    assert torch.allclose(orthogonality_loss(d, p, "none"), torch.zeros(8, dtype=torch.float64), atol=1e-20)
    assert orthogonality_loss(d, -2 * d).item() == pytest.approx(1.0)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    want = [_cos(a[i], b[i]) ** 2 for i in range(5)]
    assert torch.allclose(orthogonality_loss(a, b, "none"), torch.tensor(want), atol=1e-6)
    with pytest.raises(ValueError):
        orthogonality_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_task_losses():
    pred, target = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.0, 0.7, 0.9])
    assert task_loss(pred, target, "mse").item() == pytest.approx(((pred - target) ** 2).mean().item())
    hub = task_loss(pred, target, "huber", huber_delta=0.15, reduction="none")
    assert hub.tolist() == pytest.approx([0.5 * 0.1**2, 0.15 * (0.2 - 0.075), 0.0])
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 2])
    want = [-torch.log_softmax(logits[i], 0)[y[i]].item() for i in range(4)]
    assert task_loss(logits, y, "ce", reduction="none").tolist() == pytest.approx(want, rel=1e-5)


def test_mpdrm_loss_modes(make_batch):
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=2, image_size=32, frames=8)
    batch = make_batch(model.config, b=4)
    out = model(batch["clips"])
    per_ex = MPDRMLoss(per_example=True, contrastive="supcon")
    assert per_ex.contrastive == "prototype"
    per, parts = per_ex(out, batch, reduction="none")
    mean, _ = per_ex(out, batch)
    assert per.shape == (4,) and mean.item() == pytest.approx(per.mean().item(), rel=1e-6)
    assert set(parts) == {"loss", "task", "contrastive", "orthogonality"}
    total, parts = MPDRMLoss(lambda_c=0.5, lambda_o=0.2)(out, batch)
    want = (task_loss(out.prediction, batch["target"]) + 0.5 * supervised_contrastive_loss(
        out.personality, batch["subject"], batch["visit"], 0.1) + 0.2 * orthogonality_loss(out.depression,
                                                                                           out.personality))
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError):
        MPDRMLoss()(out, batch, reduction="none")
    no_orth, parts = MPDRMLoss(lambda_o=1.0, use_orthogonality=False)(out, batch)
    assert parts["orthogonality"].item() == 0.0
