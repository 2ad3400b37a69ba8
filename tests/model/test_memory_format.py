"""The convolutions' memory layout: channels-last on the CPU, the standard layout everywhere else."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.memory_format import clips_in_format, contiguous_tensors, model_in_format, resolve_memory_format
from mpdrm.training import PlainEngine, TrainConfig, predict, train_local


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 5]


def test_auto_is_channels_last_on_the_cpu_only_and_a_bad_name_is_refused():
    assert resolve_memory_format("auto", torch.device("cpu")) == torch.channels_last_3d
    assert resolve_memory_format("auto", torch.device("cuda")) == torch.contiguous_format
    assert resolve_memory_format("channels_last", torch.device("cuda")) == torch.channels_last_3d
    assert resolve_memory_format("contiguous", torch.device("cpu")) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory_format must be one of"):
        resolve_memory_format("nhwc", torch.device("cpu"))
    with pytest.raises(ValueError, match="memory_format must be one of"):
        TrainConfig(memory_format="nhwc")


def test_the_model_is_switched_for_the_block_and_back_with_the_same_parameters():
    model = _model()
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    with model_in_format(model, torch.channels_last_3d):
        assert all(w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous()
                   for w in _conv_weights(model) if w.shape[1] > 1 and w.shape[2:].numel() > 1)
    for name, p in model.named_parameters():
        assert p is before[name][0], name              # an optimizer's references stay valid
        assert p.is_contiguous() and torch.equal(p, before[name][1]), name


def test_clips_change_layout_and_nothing_else():
    batch = {"clips": torch.randn(2, 3, 4, 8, 8), "target": torch.rand(2)}
    moved = clips_in_format(batch, torch.channels_last_3d)
    assert moved["clips"].is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(moved["clips"], batch["clips"]) and moved["target"] is batch["target"]
    assert clips_in_format(batch, torch.contiguous_format)["clips"] is batch["clips"]
    nested = contiguous_tensors({"state": {0: {"exp_avg": moved["clips"]}}, "param_groups": [{"params": [0]}]})
    assert nested["state"][0]["exp_avg"].is_contiguous() and nested["param_groups"] == [{"params": [0]}]


def test_outputs_agree_across_layouts(brightness_dataset):
    loader = DataLoader(brightness_dataset(n=16), batch_size=8)
    model = _model()
    standard = predict(model, loader, device="cpu", memory_format="contiguous")["prediction"]
    fast = predict(model, loader, device="cpu", memory_format="auto")["prediction"]
    np.testing.assert_allclose(fast, standard, atol=1e-5)
    assert all(w.is_contiguous() for w in _conv_weights(model))


def _trained(layout: str, data, optimizer: str) -> tuple[torch.nn.Module, dict, dict]:
    model = _model(seed=1)
    cfg = TrainConfig(epochs=1, lr=1e-2 if optimizer == "sgd" else 1e-3, optimizer=optimizer, seed=3,
                      device="cpu", memory_format=layout)
    result = train_local(model, DataLoader(data, batch_size=8), cfg)
    return model, result.optimizer_state, result.metrics


def test_training_in_channels_last_is_the_same_computation(brightness_dataset):
    """With plain SGD a step is linear in the gradient, so the layouts' float-order differences
    stay at float level (AdamW divides by the gradient's size: where a gradient is near 0 the
    same differences move single weights by up to the learning rate, as a thread count does)."""
    data = brightness_dataset(n=24)
    standard, _, before = _trained("contiguous", data, "sgd")
    fast, _, after = _trained("channels_last", data, "sgd")
    for (name, a), b in zip(standard.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)


def test_what_channels_last_training_returns_is_in_the_standard_layout(brightness_dataset, tmp_path):
    fast, state, _ = _trained("channels_last", brightness_dataset(n=16), "adamw")
    assert all(t.is_contiguous() for t in fast.state_dict().values())
    moments = [t for s in state["state"].values() for t in s.values() if torch.is_tensor(t) and t.dim() == 5]
    assert moments and all(t.is_contiguous() for t in moments)
    save_file(dict(fast.state_dict()), str(tmp_path / "w.safetensors"))   # refuses a strided tensor


class _LayoutSpy(PlainEngine):
    """Records whether a 3x3x3 conv weight is in the standard layout at each step (the clips
    have one channel, for which both layouts are the same)."""

    def __init__(self, per_example: bool) -> None:
        super().__init__()
        self.per_example = per_example
        self.seen: list[bool] = []

    def step(self, model, batch, loss_fn):
        weight = _conv_weights(model)[1]
        self.seen.append(weight.is_contiguous())
        return {}


@pytest.mark.parametrize("per_example, contiguous", [(False, False), (True, True)])
def test_per_example_engines_train_in_the_standard_layout(brightness_dataset, per_example, contiguous):
    """DP-SGD (a per-example engine) keeps the layout its per-sample gradients are tested in."""
    spy = _LayoutSpy(per_example)
    loader = DataLoader(brightness_dataset(n=8, frames=8, size=32), batch_size=4)
    train_local(_model(), loader, TrainConfig(epochs=1, device="cpu", memory_format="auto"), engine=spy)
    assert spy.seen and all(seen == contiguous for seen in spy.seen)
