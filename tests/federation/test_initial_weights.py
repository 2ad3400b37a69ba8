"""``init``: a federated run starts from shared weights pretrained by ``strategy=centralized``;
a file that does not fit the run's model is refused, naming the file and the problem."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mpdrm import tensorfile
from mpdrm.contract.initial import INIT_FILE, InitFileError, load_initial_weights, save_initial_weights
from mpdrm.contract.runconfig import merged
from server.app import initial_model
from simulations.centralized import run_centralized
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("init"), sites=2)


def _config(cohort: Path, root: Path, **extra) -> dict:
    return {**TINY_RUN, "cohort": str(cohort), "run-dir": str(root / "run"), "state-root": str(root / "state"),
            "num-server-rounds": 1, **extra}


def test_a_federated_run_starts_from_centrally_pretrained_shared_weights(cohort: Path, tmp_path: Path) -> None:
    pretrained = run_centralized(_config(cohort, tmp_path / "public", mode="centralized", seed=7))
    init = tmp_path / "public" / "run" / INIT_FILE
    assert pretrained["init_file"] == str(init) and init.is_file()
    weights = tensorfile.load(init)["weights"]
    shared, _, fresh = initial_model(merged(_config(cohort, tmp_path)))
    assert sorted(weights) == sorted(shared) and not any(k.startswith("personality.") for k in weights)
    assert any(not np.array_equal(fresh[k].numpy(), weights[k].numpy()) for k in shared)  # training moved them

    seen: list[dict[str, np.ndarray]] = []

    def spy(handler):
        def wrapped(message):
            if "arrays" in message.content.array_records and not seen:
                seen.append({k: v.numpy() for k, v in message.content["arrays"].items()})
            return handler(message)
        return wrapped

    summary = run_in_process(_config(cohort, tmp_path, init=str(init)), {100 + i: node_context(i, 2) for i in range(2)},
                             wrap={100: spy})
    assert summary["config"]["init"] == str(init) and [r["round"] for r in summary["rounds"]] == [1]
    assert seen and set(seen[0]) == set(weights)
    assert all(np.array_equal(seen[0][k], weights[k].numpy()) for k in weights)  # the first instruction


def test_an_init_file_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    expected = {"depression.w": torch.zeros(2, 3), "rarm.b": torch.zeros(3)}
    good = save_initial_weights(tmp_path / "good.safetensors", {k: v + 1 for k, v in expected.items()}, {"seed": 1})
    assert torch.equal(load_initial_weights(good, expected)["rarm.b"], torch.ones(3))

    cases = {
        "missing": ({"depression.w": torch.zeros(2, 3)}, r"missing rarm\.b"),
        "local": ({**expected, "personality.w": torch.zeros(1)}, r"personality\.w is not shared in this run"),
        "shape": ({**expected, "rarm.b": torch.zeros(4)}, r"rarm\.b: \(4,\) torch.float32 in the file, \(3,\)"),
    }
    for name, (weights, message) in cases.items():
        path = save_initial_weights(tmp_path / f"{name}.safetensors", weights, {})
        with pytest.raises(InitFileError, match=rf"init={path} does not fit the run's model: .*{message}"):
            load_initial_weights(path, expected)

    other = tmp_path / "checkpoint.safetensors"
    tensorfile.save(other, {"round": 3, "arrays": {"rarm.b": torch.zeros(3)}})
    with pytest.raises(InitFileError, match="not a starting-weights file"):
        load_initial_weights(other, expected)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(InitFileError, match=rf"init={cut}"):
        load_initial_weights(cut, expected)
    with pytest.raises(InitFileError, match="init=.*nowhere"):
        load_initial_weights(tmp_path / "nowhere.safetensors", expected)
