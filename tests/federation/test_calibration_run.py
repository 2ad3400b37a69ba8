"""eval.calibration in a federated run (real ServerApp / ClientApp code, in-process grid): each
site adds the offset of its own training videos to the scores it reports and serves; training is
untouched; ``none`` reports the shared model's scores as they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpdrm.calibration import site_offset
from mpdrm.contract.runconfig import merged
from mpdrm.contract.site_data import eval_loader, site_data
from mpdrm.inference.model import load_model_dir
from mpdrm.metrics import video_level
from mpdrm.training import predict
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

SITES = ("site-01", "site-02")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    root = tmp_path_factory.mktemp("calibration")
    cohort = make_tiny_cohort(root, sites=2)
    out = {}
    for mode in ("offset", "none"):
        cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / mode / "run"),
               "state-root": str(root / mode / "state"), "num-server-rounds": 1, "eval.calibration": mode}
        out[mode] = (cfg, run_in_process(cfg, {100 + i: node_context(i, 2) for i in range(2)}))
    return out


def test_training_is_the_same_with_and_without_calibration(runs) -> None:
    (_, calibrated), (_, plain) = runs["offset"], runs["none"]
    for site in SITES:  # the same steps and losses (wall times differ)
        got, want = (run["rounds"][0]["train"]["per_site"][site] for run in (calibrated, plain))
        for key in ("train-task", "train-loss", "train-steps", "num-examples"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), key
    a = load_model_dir(Path(runs["offset"][0]["state-root"]) / SITES[0] / "model").model.state_dict()
    b = load_model_dir(Path(runs["none"][0]["state-root"]) / SITES[0] / "model").model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("site", SITES)
def test_each_site_reports_its_training_offset_and_the_shifted_error(runs, site: str) -> None:
    cfg, summary = runs["offset"]
    _, plain = runs["none"]
    model = load_model_dir(Path(cfg["state-root"]) / site / "model").model
    data = site_data(Path(cfg["cohort"]) / site, merged(cfg))
    train = predict(model, eval_loader(data.train, merged(cfg)), personality="clip")
    offset = site_offset(train["prediction"], train["target"], train["video"])  # computed here, directly
    reported = summary["final"]["per_site"][site]
    assert reported["calibration_offset"] == pytest.approx(offset, abs=1e-6) and offset != 0
    test = predict(model, eval_loader(data.test, merged(cfg)), personality="clip")
    pred, target = video_level(test["prediction"] + offset, test["target"], test["video"], "regression")
    assert reported["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - target) ** 2))), abs=1e-5)
    assert "calibration_offset" not in plain["final"]["per_site"][site]
    raw, _ = video_level(test["prediction"], test["target"], test["video"], "regression")
    assert plain["final"]["per_site"][site]["rmse"] == pytest.approx(float(np.sqrt(np.mean((raw - target) ** 2))),
                                                                    abs=1e-5)
