"""Each evaluation protocol end to end with the real ServerApp and ClientApp code (in-process
Grid): the run completes, scored people use their reference, nothing but metrics leaves a site
at evaluation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import mpdrm
from mpdrm.training import predict
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("protocols"), sites=2)


def _recording(replies: list):
    def wrap(handler):
        def recorded(message):
            reply = handler(message)
            replies.append((message.metadata.message_type, reply))
            return reply
        return recorded
    return wrap


@pytest.mark.parametrize("protocol", ["subjects", "visits", "enrolled"])
def test_protocol_runs_end_to_end(cohort: Path, tmp_path: Path, protocol: str) -> None:
    replies: list = []
    contexts = {100 + i: node_context(i, 2) for i in range(2)}
    cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(tmp_path / "run"), "state-root": str(tmp_path / "state"),
           "num-server-rounds": 1, "eval.protocol": protocol}
    summary = run_in_process(cfg, contexts, wrap={n: _recording(replies) for n in contexts})
    final = summary["final"]
    assert math.isfinite(final["rmse"]) and len(final["per_site"]) == 2
    evaluations = [r for kind, r in replies if kind.startswith("evaluate")]
    assert evaluations and all(len(r.content.array_records) == 0 for r in evaluations)


def test_reference_personality_needs_reference_clips_for_every_scored_subject() -> None:
    model = mpdrm.build_model("tiny", image_size=32, num_subjects=2)
    batch = {"clips": torch.randn(2, 1, 16, 32, 32), "target": torch.zeros(2), "subject": torch.tensor([0, 1]),
             "visit": torch.ones(2, dtype=torch.long), "video": torch.tensor([0, 1])}
    reference = [{**batch, "subject": torch.tensor([0, 0])}]
    with pytest.raises(ValueError, match=r"no reference clips for subject index\(es\) \[1\]"):
        predict(model, [batch], personality="reference", reference=reference)
    with pytest.raises(ValueError, match="needs the reference clips"):
        predict(model, DataLoader([]), personality="reference")
    same = predict(model, [batch], personality="reference", reference=[batch])
    mean = predict(model, [batch], personality="subject_mean")
    assert torch.allclose(torch.as_tensor(same["prediction"]), torch.as_tensor(mean["prediction"]), atol=1e-6)
