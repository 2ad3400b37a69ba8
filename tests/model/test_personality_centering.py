"""A new personality branch is centred on its site's clips before it first trains, so that p does
not start as the same point for every clip (``mpdrm.training.center_personality``)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.training import center_personality


def _mean_pairwise_cosine(p: torch.Tensor) -> float:
    cos = p @ p.T
    return float(cos[~torch.eye(len(p), dtype=torch.bool)].mean())


def _clips(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Face-like clips: one shared bright pattern plus a small per-clip part (what a fresh
    backbone turns into nearly identical pooled features)."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.rand(1, 1, 8, size, size, generator=g)
    return (shared + 0.1 * torch.rand(n, 1, 8, size, size, generator=g)).clamp(0, 1)


def test_centring_spreads_a_fresh_branchs_embeddings_and_touches_only_the_projection_bias():
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", image_size=32, frames=8, num_subjects=4).eval()
    clips = _clips(48, seed=1)
    fit, held_out = clips[:32], clips[32:]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        cos_before = _mean_pairwise_cosine(model.personality(held_out))
    used = center_personality(model, DataLoader([{"clips": c} for c in fit], batch_size=5), max_clips=20)
    with torch.no_grad():
        cos_after = _mean_pairwise_cosine(model.personality(held_out))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert used == 20
    assert changed == ["personality.head.2.bias"]
    assert cos_before > 0.9 and cos_after < 0.5, (cos_before, cos_after)


def test_a_model_without_a_personality_branch_is_left_alone():
    model = mpdrm.build_model("tiny", image_size=32, frames=8, use_mpfn=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert center_personality(model, [{"clips": _clips(4)}]) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
