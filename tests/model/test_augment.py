"""Training-time clip augmentation (mpdrm.augment): what each transform keeps, seeding, the loop."""
import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.augment import ClipAugment, parse_augment
from mpdrm.training import TrainConfig, train_local


def _clips(b=32, seed=0, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(b, 1, 6, 8, 8, generator=g)


def test_names_parse_from_commas_lists_and_flattened_lists():
    assert parse_augment("flip, photometric") == ("flip", "photometric")
    assert parse_augment('["reverse", "flip"]') == ("reverse", "flip")
    assert parse_augment(["photometric"]) == ("photometric",)
    assert parse_augment("") == ()
    with pytest.raises(ValueError, match="unknown augmentation.*blur"):
        parse_augment("flip,blur")
    with pytest.raises(ValueError, match="blur"):
        TrainConfig(augment="blur")
    with pytest.raises(ValueError, match="augment_strength"):
        TrainConfig(augment="photometric", augment_strength=1.5)


@pytest.mark.parametrize("name,axis", [("flip", -1), ("reverse", 2)])
def test_flip_and_reverse_mirror_whole_clips_about_half_the_time(name, axis):
    x = _clips(b=64)
    y = ClipAugment((name,), seed=1).clips(x)
    mirrored = [torch.equal(y[i], x[i].flip(axis - 1 if axis > 0 else axis)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 <= sum(mirrored) <= 48, sum(mirrored)


def test_photometric_scales_every_temporal_change_of_a_clip_by_one_factor():
    x = _clips(low=0.4, high=0.6)  # no value reaches the clamp at strength 0.2
    y = ClipAugment(("photometric",), strength=0.2, seed=2).clips(x)
    factors = []
    for xi, yi in zip(x, y):
        dx, dy = xi.diff(dim=1), yi.diff(dim=1)  # frame-to-frame change
        c = float((dy * dx).sum() / (dx * dx).sum())
        torch.testing.assert_close(dy, c * dx, rtol=0, atol=1e-5)
        factors.append(c)
    assert min(factors) >= torch.exp(torch.tensor(-0.2)) - 1e-4 and max(factors) <= torch.exp(torch.tensor(0.2)) + 1e-4
    assert max(factors) - min(factors) > 0.1  # one draw per clip, not one per batch
    assert not torch.equal(y.mean(dim=(1, 2, 3, 4)) - x.mean(dim=(1, 2, 3, 4)), torch.zeros(len(x)))
    z = ClipAugment(("photometric",), strength=1.0, seed=2).clips(_clips())
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0


def test_seeded_per_clip_and_the_input_untouched():
    x = _clips()
    before = x.clone()
    names = ("flip", "photometric", "reverse")
    a = ClipAugment(names, seed=5).clips(x)
    assert torch.equal(x, before)
    assert torch.equal(a, ClipAugment(names, seed=5).clips(x))
    assert not torch.equal(a, ClipAugment(names, seed=6).clips(x))
    other = x.clone()
    other[1:] = _clips(seed=9)[1:]  # every other clip changed: clip 0's result must not move
    assert torch.equal(ClipAugment(names, seed=5).clips(other)[0], a[0])
    assert ClipAugment((), seed=5).batch({"clips": x})["clips"] is x


def test_the_training_loop_augments_what_the_model_sees_and_stays_reproducible(brightness_dataset):
    data = brightness_dataset(n=16)
    loader = DataLoader(data, batch_size=8)
    fed = []

    def run(augment):
        torch.manual_seed(0)
        model = mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8)
        hook = model.register_forward_pre_hook(lambda m, args: fed.append(args[0].clone()))
        train_local(model, loader, TrainConfig(epochs=1, seed=3, device="cpu", augment=augment))
        hook.remove()
        return model.state_dict()

    plain = run("")
    assert all(torch.equal(f, b["clips"]) for f, b in zip(fed, loader))
    fed.clear()
    flipped = run("flip")
    assert not all(torch.equal(f, b["clips"]) for f, b in zip(fed, loader))
    for f, b in zip(fed, loader):  # each clip as loaded or mirrored, nothing else
        assert all(torch.equal(fi, bi) or torch.equal(fi, bi.flip(-1)) for fi, bi in zip(f, b["clips"]))
    again = run("flip")
    assert all(torch.equal(flipped[k], again[k]) for k in flipped)
    assert any(not torch.equal(flipped[k], plain[k]) for k in flipped)
