"""The local training loop and the evaluation."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.training import PlainEngine, TrainConfig, evaluate, lr_factor, predict, round_lr_factor, train_local


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return mpdrm.build_model("tiny", **{"num_subjects": 4, "image_size": 32, "frames": 8, **kw})


def _mse(model, loader):
    out = predict(model, loader)
    return float(np.mean((out["prediction"] - out["target"]) ** 2))


def test_training_lowers_the_loss(brightness_dataset):
    data = brightness_dataset(n=48)
    loader = DataLoader(data, batch_size=8, shuffle=True)
    model = _model()
    before = _mse(model, loader)
    cfg = TrainConfig(epochs=3, lr=3e-3, lambda_c=0.1, lambda_o=0.1, seed=0, device="cpu")
    result = train_local(model, loader, cfg)
    after = _mse(model, loader)
    assert result.steps == 18 and result.num_examples == 48
    assert after < 0.5 * before, (before, after)
    for key in ("loss", "task", "contrastive", "orthogonality", "lr", "seconds", "proximal"):
        assert math.isfinite(result.metrics[key]), key
    assert result.optimizer_state["state"]  # AdamW moments to carry to the next round


def test_same_seed_same_weights(brightness_dataset):
    data = brightness_dataset(n=24)
    cfg = TrainConfig(epochs=1, lr=1e-3, seed=7, device="cpu", contrastive="prototype")
    states = []
    for _ in range(2):
        model = _model(seed=3)
        train_local(model, DataLoader(data, batch_size=8, shuffle=True), cfg)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    other = _model(seed=3)
    train_local(other, DataLoader(data, batch_size=8, shuffle=True), TrainConfig(epochs=1, seed=8, device="cpu",
                                                                                 contrastive="prototype"))
    assert any(not torch.equal(states[0][k], other.state_dict()[k]) for k in states[0])


def test_optimizer_state_and_proximal_term(brightness_dataset):
    data = brightness_dataset(n=16)
    loader = DataLoader(data, batch_size=8)
    model = _model()
    ref = {k: v.clone() for k, v in mpdrm.shared_state(model).items()}
    first = train_local(model, loader, TrainConfig(epochs=1, device="cpu", max_steps=1))
    assert first.steps == 1
    # resume with the returned state; the configured lr is restored, not the decayed one
    second = train_local(model, loader, TrainConfig(epochs=1, lr=5e-4, schedule="none", device="cpu"),
                         optimizer_state=first.optimizer_state)
    assert second.metrics["lr"] == 5e-4

    def drift(mu):
        m = _model()
        start = {k: v.clone() for k, v in mpdrm.shared_state(m).items()}
        cfg = TrainConfig(epochs=2, lr=1e-2, proximal_mu=mu, device="cpu", schedule="none")
        r = train_local(m, loader, cfg, reference_params=start)
        names = dict(m.named_parameters())
        d = sum(float((names[k].detach() - v).square().sum()) for k, v in start.items() if k in names)
        return d, r.metrics["proximal"]

    free, prox_free = drift(0.0)
    held, prox_held = drift(50.0)
    assert prox_free == 0.0 and prox_held > 0.0
    assert held < free


def test_lr_schedules():
    cos = TrainConfig(schedule="cosine")
    assert lr_factor(cos, 0, 10, 5) == 1.0
    assert lr_factor(cos, 5, 10, 5) == pytest.approx(0.5)
    assert lr_factor(cos, 10, 10, 5) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(schedule="step", step_size=1, step_gamma=0.1)
    assert [lr_factor(step, s, 10, 5) for s in (0, 4, 5, 9)] == pytest.approx([1, 1, 0.1, 0.1])
    assert lr_factor(TrainConfig(schedule="none"), 3, 10, 5) == 1.0
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")


def test_round_schedule_decays_the_lr_across_rounds():
    cos = TrainConfig(round_schedule="cosine", min_lr_ratio=0.1)
    factors = [round_lr_factor(cos, r, 4) for r in (1, 2, 3, 4)]
    assert factors == pytest.approx([1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 0.55,
                                     0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4))])
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert [round_lr_factor(TrainConfig(), r, 4) for r in (1, 4)] == [1.0, 1.0]
    assert round_lr_factor(cos, 1, 1) == 1.0
    with pytest.raises(ValueError):
        TrainConfig(round_schedule="step")


def test_a_custom_engine_plugs_into_the_loop(brightness_dataset):
    """The privacy layer plugs in through an engine (wrap, step, unwrap) without copying the loop."""
    data = brightness_dataset(n=16)
    loader = DataLoader(data, batch_size=8)
    seen = {}

    class Recording(PlainEngine):
        per_example = True

        def wrap(self, model, loader_, cfg, **kw):
            model, loader_ = super().wrap(model, loader_, cfg, **kw)
            seen["prepare"] = (type(model).__name__, type(self.optimizer).__name__)
            return model, loader_

        def step(self, model, batch, loss_fn):
            seen["steps"] = seen.get("steps", 0) + 1
            seen["per_example"] = loss_fn.per_example
            self.optimizer.zero_grad()
            loss, parts = loss_fn(model(batch["clips"]), batch, reduction="none")
            loss.mean().backward()
            self.optimizer.step()
            return parts

        def unwrap(self):
            seen["unwrapped_after"] = seen["steps"]

    model = _model()
    r = train_local(model, loader, TrainConfig(device="cpu"), engine=Recording())
    assert seen == {"prepare": ("MPDRM", "AdamW"), "steps": 2, "per_example": True, "unwrapped_after": 2}
    assert r.steps == 2


def test_engine_unwraps_when_a_step_fails(brightness_dataset):
    unwrapped = []

    class Failing(PlainEngine):
        def step(self, model, batch, loss_fn):
            raise RuntimeError("boom")

        def unwrap(self):
            unwrapped.append(True)

    with pytest.raises(RuntimeError, match="boom"):
        train_local(_model(), DataLoader(brightness_dataset(n=8), batch_size=4), TrainConfig(device="cpu"),
                    engine=Failing())
    assert unwrapped == [True]


@pytest.mark.parametrize("personality", ["clip", "subject_mean"])
def test_evaluate_regression(personality, brightness_dataset):
    data = brightness_dataset(n=12)
    model = _model()
    out = evaluate(model, DataLoader(data, batch_size=5), task="regression", personality=personality)
    assert set(out) == {"rmse", "mae", "pcc", "ccc", "clip_rmse", "clip_mae", "clip_pcc", "clip_ccc",
                        "subject_bias_rmse", "within_subject_rmse", "mean_error"}
    assert all(math.isfinite(v) for v in out.values())
    assert out["subject_bias_rmse"] ** 2 + out["within_subject_rmse"] ** 2 == pytest.approx(out["rmse"] ** 2)
    assert model.training  # mode restored


def test_subject_mean_uses_the_subjects_mean_embedding(brightness_dataset):
    data = brightness_dataset(n=8, subjects=2)
    model = _model().eval()
    loader = DataLoader(data, batch_size=3)
    got = predict(model, loader, personality="subject_mean")["prediction"]
    clips = data.clips
    with torch.no_grad():
        p = model.personality_embedding(clips)
        want = []
        for i in range(len(data)):
            s = int(data.subject[i])
            mean = torch.nn.functional.normalize(p[data.subject == s].mean(0), dim=0)
            want.append(model(clips[i: i + 1], personality=mean[None]).prediction.item())
    assert np.allclose(got, want, atol=1e-5)


def test_evaluate_classification(brightness_dataset):
    data = brightness_dataset(n=12, task="classification")
    model = _model(task="classification", num_classes=2)
    out = evaluate(model, DataLoader(data, batch_size=6))
    assert set(out) == {"accuracy", "f1", "auc", "clip_accuracy", "clip_f1", "clip_auc"}
    r = train_local(model, DataLoader(data, batch_size=6), TrainConfig(device="cpu", max_steps=1))
    assert math.isfinite(r.metrics["loss"])


def test_ablated_models_train(brightness_dataset):
    data = brightness_dataset(n=8)
    for kw in (dict(use_mpfn=False), dict(use_rarm=False), dict(use_mmp=False), dict(num_subjects=0)):
        model = _model(**kw)
        cfg = TrainConfig(device="cpu", max_steps=1, contrastive="prototype")
        assert math.isfinite(train_local(model, DataLoader(data, batch_size=8), cfg).metrics["loss"])
        assert math.isfinite(evaluate(model, DataLoader(data, batch_size=8), personality="subject_mean")["mae"])


def test_frozen_parameters_keep_their_values_and_are_thawed_afterwards(brightness_dataset):
    data = brightness_dataset(n=16)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=1, lr=3e-3, seed=0, device="cpu",
                      freeze="depression.backbone, personality.backbone")
    result = train_local(model, DataLoader(data, batch_size=8), cfg)
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(("depression.backbone", "personality.backbone"))]
    trained = [k for k in before if k.startswith(("rarm.", "head.", "depression.proj"))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert all(p.requires_grad for p in model.parameters())  # thawed for the next user
    n_trained = sum(1 for n, _ in model.named_parameters() if n not in frozen)
    assert sum(len(g["params"]) for g in result.optimizer_state["param_groups"]) == n_trained


def test_freeze_takes_a_comma_list_or_a_flattened_hydra_list():
    want = ("depression.backbone", "personality.backbone")
    assert TrainConfig(freeze=" depression.backbone,personality.backbone ").freeze_prefixes == want
    assert TrainConfig(freeze='["depression.backbone", "personality.backbone"]').freeze_prefixes == want
    assert TrainConfig().freeze_prefixes == ()


def test_freeze_prefix_that_matches_nothing_is_an_error(brightness_dataset):
    model = _model()
    with pytest.raises(ValueError, match="depresion.backbone"):
        train_local(model, DataLoader(brightness_dataset(n=8), batch_size=8),
                    TrainConfig(epochs=1, device="cpu", freeze="depresion.backbone"))
    assert all(p.requires_grad for p in model.parameters())


def test_sgd_optimizer_and_unknown_optimizer(brightness_dataset):
    model = _model()
    result = train_local(model, DataLoader(brightness_dataset(n=16), batch_size=8),
                         TrainConfig(epochs=1, optimizer="sgd", lr=1e-2, momentum=0.9, device="cpu"))
    assert all("momentum_buffer" in s for s in result.optimizer_state["state"].values())
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
