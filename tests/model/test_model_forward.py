"""Forward and backward of every size and ablation; output shapes; every parameter gets a gradient."""
import pytest
import torch

import mpdrm
from mpdrm.losses import MPDRMLoss

# each size at a small spatial extent (all 16 frames: the deepest MMP needs >= 3 time steps) so the suite stays fast on CPU
SMALL = {
    "tiny": dict(),  # tiny runs at its native 16x64x64
    "base": dict(image_size=48),
    "paper": dict(image_size=32),
}

ABLATIONS = {
    "full": {},
    "no_mmp": dict(use_mmp=False),
    "no_mpfn": dict(use_mpfn=False),
    "no_rarm": dict(use_rarm=False),
    "no_orth": dict(use_orthogonality=False),
    "no_prototypes": dict(num_subjects=0),
}


def _check_all_grads(model):
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("size", ["tiny", "base", "paper"])
def test_forward_backward_each_size(size, make_batch):
    torch.manual_seed(0)
    model = mpdrm.build_model(size, num_subjects=3, **SMALL[size])
    cfg = model.config
    batch = make_batch(cfg, b=2)
    out = model(batch["clips"])
    assert isinstance(out, mpdrm.MPDRMOutput)
    assert out.prediction.shape == (2,)
    assert out.depression.shape == (2, cfg.embed_dim)
    assert out.personality.shape == (2, cfg.embed_dim)
    assert torch.allclose(out.personality.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out.prototype_similarity.shape == (2, 3)
    assert out.attention.shape[0] == 2
    assert torch.allclose(out.attention.sum(-1), torch.ones(2), atol=1e-5)
    # the per-example (prototype) objective reaches every parameter, prototypes included
    loss, _ = MPDRMLoss(per_example=True, lambda_c=1.0, lambda_o=1.0)(out, batch)
    loss.backward()
    _check_all_grads(model)


def test_sizes_have_the_documented_shapes():
    tiny = mpdrm.build_model("tiny").config
    assert (tiny.in_channels, tiny.frames, tiny.image_size) == (1, 16, 64)
    assert mpdrm.build_model("base").config.image_size == 112
    paper = mpdrm.build_model("paper").config
    assert paper.widths == (64, 128, 256, 512) and paper.blocks == (2, 2, 2, 2)
    assert paper.image_size == 112 and paper.stem_kernel == (3, 7, 7)


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablations_forward_backward(ablation, make_batch):
    torch.manual_seed(0)
    kw = {"num_subjects": 3, "image_size": 32, "frames": 8, **ABLATIONS[ablation]}
    model = mpdrm.build_model("tiny", **kw)
    batch = make_batch(model.config, b=3)
    out = model(batch["clips"])
    names = [n for n, _ in model.named_parameters()]
    if ablation == "no_mpfn":
        assert out.personality is None and out.prototype_similarity is None
        assert not any(n.startswith("personality.") for n in names)
        assert model.rarm.personality_proj is None and model.rarm.relation is None
    if ablation == "no_rarm":
        assert out.attention is None
        assert not any(n.startswith("rarm.") for n in names)
        assert torch.allclose(out.depression, model.depression(batch["clips"])[1])
    if ablation == "no_mmp":
        assert not any(".mmp." in n for n in names)
    else:
        # MMP after every stage from the second on, in both networks
        stages = len(model.config.widths)
        for net in ["depression"] + (["personality"] if model.personality is not None else []):
            for i in range(stages):
                has = any(n.startswith(f"{net}.backbone.stages.{i}.mmp.") for n in names)
                assert has == (i >= 1), (net, i)
    if ablation == "no_prototypes":
        assert out.prototype_similarity is None
    loss, _ = MPDRMLoss(per_example=True)(out, batch)
    loss.backward()
    for name, p in model.named_parameters():
        if ablation == "no_prototypes" or name != "personality.prototypes.weight":
            assert p.grad is not None, name


def test_classification_head(make_batch):
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", task="classification", num_classes=3, image_size=32, frames=8)
    batch = make_batch(model.config, b=4)
    out = model(batch["clips"])
    assert out.prediction.shape == (4, 3)
    loss, parts = MPDRMLoss(task="classification")(out, batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_personality_override_and_wrong_channels(make_batch):
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", image_size=32, frames=8).eval()
    batch = make_batch(model.config, b=2)
    p = model.personality_embedding(batch["clips"])
    a = model(batch["clips"])
    b = model(batch["clips"], personality=3.0 * p)  # re-normalised
    assert torch.allclose(a.prediction, b.prediction, atol=1e-6)
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.zeros(1, 3, 8, 32, 32))


def test_examples_are_independent(make_batch):
    """No operation couples the examples of a batch: example 0's per-example loss does not depend
    on example 1's clip (the property DP-SGD's per-sample clipping relies on)."""
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", num_subjects=3, image_size=32, frames=8, dropout=0.0)
    batch = make_batch(model.config, b=3)
    clips = batch["clips"].clone().requires_grad_(True)
    losses, _ = MPDRMLoss(per_example=True, lambda_c=1.0, lambda_o=1.0)(model(clips), batch, reduction="none")
    (grad,) = torch.autograd.grad(losses[0], clips)
    assert grad[0].abs().sum() > 0
    assert grad[1:].abs().max() == 0


def test_mmp_shapes_and_ops():
    from mpdrm.model.mmp import MMP, temporal_difference, temporal_max_pool

    x = torch.randn(2, 8, 6, 5, 5)
    d1 = temporal_difference(x, 1)
    assert d1.shape == x.shape
    assert torch.allclose(d1[:, :, :5], (x[:, :, 1:] - x[:, :, :-1]).abs())
    assert (d1[:, :, 5] == 0).all()
    assert (temporal_difference(x, 6) == 0).all()
    for s in (2, 3, 4):
        m = temporal_max_pool(x, s)
        assert m.shape == x.shape
        before = (s - 1) // 2
        for t in range(6):
            lo, hi = max(0, t - before), min(6, t - before + s)
            assert torch.allclose(m[:, :, t], x[:, :, lo:hi].max(dim=2).values)
    block = MMP(8, norm_groups=4)
    assert len(block.branches) == 5
    assert block(x).shape == x.shape
    assert (block(x) >= 0).all()
