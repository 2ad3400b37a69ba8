"""``personal_offset``: a site-local map from p to an offset of the prediction."""
from __future__ import annotations

import torch

import mpdrm
from mpdrm.contract.names import is_local


def _models(**overrides: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    plain = mpdrm.build_model("tiny", image_size=32, frames=8, **overrides)
    with_offset = mpdrm.build_model("tiny", image_size=32, frames=8, personal_offset=True, **overrides)
    missing = with_offset.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["personality.offset.bias", "personality.offset.weight"]
    return plain.eval(), with_offset.eval()


def test_the_offset_starts_at_zero_and_adds_a_linear_function_of_p():
    plain, with_offset = _models()
    clips = torch.rand(4, 1, 8, 32, 32)
    with torch.no_grad():
        base = plain(clips)
        torch.testing.assert_close(with_offset(clips).prediction, base.prediction, rtol=0, atol=0)
        weight = torch.randn(1, with_offset.config.embed_dim)
        with_offset.personality.offset.weight.copy_(weight)
        with_offset.personality.offset.bias.fill_(0.25)
        shifted = with_offset(clips).prediction
    expected = base.prediction + base.personality @ weight[0] + 0.25
    torch.testing.assert_close(shifted, expected, rtol=1e-5, atol=1e-6)


def test_the_offset_stays_at_the_site_and_the_task_loss_trains_it_but_not_mpfn():
    _, model = _models(isolate_personality=True)  # the offset path alone must not reach MPFN
    model.train()
    assert all(is_local(n) for n in model.state_dict() if ".offset." in n)
    assert all(not n.startswith("personality.offset") for n in mpdrm.partition(model)[0])
    model(torch.rand(3, 1, 8, 32, 32)).prediction.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("personality.")}
    assert grads["personality.offset.bias"].abs().sum() > 0  # d(sum)/d(bias) = batch size
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if ".offset." not in n)
