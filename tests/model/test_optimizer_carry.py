"""A site can carry only its local parameters' optimizer state into the next round."""
from __future__ import annotations

import torch

import mpdrm
from mpdrm.training import TrainConfig
from mpdrm.training_engine import make_optimizer, optimizer_state_of


def test_only_the_kept_parameters_keep_their_moments():
    model = mpdrm.build_model("tiny", image_size=32, num_subjects=2)
    optimizer = make_optimizer(model, TrainConfig())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = optimizer.state_dict()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    local = {n for n in names if n.startswith("personality.")}
    pruned = optimizer_state_of(state, model, local)
    assert {names[i] for i in pruned["state"]} == local and len(state["state"]) == len(names)
    assert pruned["param_groups"] == state["param_groups"]
    fresh = make_optimizer(model, TrainConfig())
    fresh.load_state_dict(pruned)  # loads: the shared parameters start with fresh moments
    assert all(fresh.state[p] == {} or n in local for n, p in model.named_parameters())
    assert optimizer_state_of(state, model, set())["state"] == {}
