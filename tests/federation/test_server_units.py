"""Server pieces without Ray: atomic checkpoint, summary.json, plots, local-only strategy."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from server.checkpoint import CHECKPOINT_FILE, Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from server.plots import write_plots
from server.summary import add_round, new_summary, round_entry, write_summary


def test_checkpoint_roundtrip_is_atomic_and_restores_rng(tmp_path: Path) -> None:
    random.seed(3)
    rng = capture_rng()
    expected = random.random()
    ckpt = Checkpoint(round=2, arrays={"a.w": np.arange(4, dtype=np.float32)}, strategy_state={"x": 1},
                      rng=rng, summary={"rounds": []})
    save_checkpoint(tmp_path, ckpt)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None and loaded.round == 2
    np.testing.assert_array_equal(loaded.arrays["a.w"], np.arange(4, dtype=np.float32))
    random.seed(99)
    restore_rng(loaded.rng)
    assert random.random() == expected
    assert load_checkpoint(tmp_path / "none") is None


def test_summary_shape_and_plots(tmp_path: Path) -> None:
    summary = new_summary({"seed": 0}, ["rarm.w"], ["personality.w"], "mpdrm", {"0": "site-01", "1": "site-02"})
    summary["initial"] = {"eval": {"rmse": 0.5, "per_site": {"site-01": {"rmse": 0.5}}}}
    for r in (1, 2):
        log = {"round": r, "bytes_up": 10, "bytes_down": 20, "rejected": [],
               "train": {"train-loss": 1.0 / r, "per_site": {"0": {"train-loss": 1.0}, "1": {"train-loss": 0.5}}},
               "eval": {"rmse": 0.4 / r, "ccc": float("nan"), "per_site": {"0": {"rmse": 0.3}, "1": {"rmse": 0.5}}}}
        add_round(summary, round_entry(log, summary["sites"]))
    path = write_summary(tmp_path, summary)
    data = json.loads(path.read_text())
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert set(data["rounds"][0]["eval"]["per_site"]) == {"site-01", "site-02"}
    assert data["final"]["rmse"] == 0.2 and data["final"]["ccc"] is None  # strict JSON
    files = {p.name: p for p in write_plots(data, tmp_path / "plots")}
    assert sorted(files) == ["eval.png", "train.png"]  # one figure per stage, a panel per metric
    import matplotlib.image

    height, width = matplotlib.image.imread(files["eval.png"]).shape[:2]
    assert (height, width) == (round(2.4 * 80), round(3 * 3.2 * 80))  # one row: rmse (the NaN ccc skipped)
