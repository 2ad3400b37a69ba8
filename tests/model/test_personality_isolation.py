"""``isolate_personality``: the task loss reaches MPFN only when it is off."""
from __future__ import annotations

import pytest
import torch

import mpdrm


@pytest.mark.parametrize("isolate", [True, False])
def test_the_task_gradient_reaches_the_personality_branch_only_when_not_isolated(isolate: bool):
    torch.manual_seed(0)
    model = mpdrm.build_model("tiny", image_size=32, frames=8, isolate_personality=isolate)
    clips = torch.rand(3, 1, 8, 32, 32)
    model(clips).prediction.sum().backward()
    personality = [p.grad for n, p in model.named_parameters() if n.startswith("personality.")
                   and not n.startswith("personality.prototypes")]
    reached = any(g is not None and g.abs().sum() > 0 for g in personality)
    assert reached is not isolate
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith("rarm.personality_proj"))  # RARM still learns how to use p
