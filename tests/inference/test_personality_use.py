"""``benchmarks/personality_use.py`` on a finished tiny run: one row per site with the figures
that tell whether the prediction depends on the personality embedding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.personality_use import run_report, video_scores
from mpdrm.inference.model import load_model_dir


def test_every_site_gets_its_figures(tiny_run) -> None:
    report = run_report(tiny_run.root / "state", tiny_run.cohort)
    assert set(report["sites"]) == {"site-01", "site-02"}
    for figures in report["sites"].values():
        assert figures["videos"] > 0 and figures["subjects"] >= 2
        assert -1.0 <= figures["reference_cosine_min"] <= figures["reference_cosine_mean"] <= 1.0 + 1e-6
        assert all(math.isfinite(v) and v >= 0 for k, v in figures.items() if k.startswith(("score_sd", "rmse", "mean_abs")))


def test_the_spread_over_references_is_what_changing_p_alone_does(tiny_run) -> None:
    model = load_model_dir(tiny_run.state_dir("site-01") / "model")
    subject = next(iter(model.training))
    c = model.model.config
    clips = np.random.default_rng(0).integers(0, 256, size=(3, c.in_channels, c.frames, c.image_size, c.image_size),
                                              dtype=np.uint8)
    by_reference, with_clip_p = video_scores(model, clips)
    assert set(by_reference) == set(model.training)
    # the same scores straight from the network, p given explicitly (no SiteModel scoring path)
    x = torch.from_numpy(clips).float() / 255
    with torch.no_grad():
        direct = float(model.model(x, personality=torch.as_tensor(model.training[subject]).expand(len(x), -1))
                       .prediction.mean())
        own_p = float(model.model(x).prediction.mean())
    offset = model.calibration_offset  # the site's calibration, part of every served score
    assert by_reference[subject] == pytest.approx(direct + offset, abs=1e-6)
    assert with_clip_p == pytest.approx(own_p + offset, abs=1e-6)
