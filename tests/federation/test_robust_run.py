"""Bounded influence of one site in a federated run: the real ServerApp and ClientApp code
in process, one of three sites sending its update x100; summary.json flags it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, Message

from server.summary import read_summary
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process

pytestmark = pytest.mark.timeout(300)


def x100(handler):
    """A site replying ``global + 100 x (its reply - global)`` to every training instruction."""
    def malicious(message: Message) -> Message:
        answer = handler(message)
        if message.metadata.message_type == "train":
            sent, arrays = message.content["arrays"], answer.content["arrays"]
            for name in list(arrays.keys()):
                glob = sent[name].numpy()
                arrays[name] = Array((glob + 100 * (arrays[name].numpy() - glob)).astype(glob.dtype))
        return answer
    return malicious


def test_a_x100_site_is_bounded_and_flagged_in_the_summary(tmp_path: Path) -> None:
    cohort = make_tiny_cohort(tmp_path, sites=3)
    cfg = {**TINY_RUN, "cohort": str(cohort), "run-dir": str(tmp_path / "run"), "state-root": str(tmp_path / "state"),
           "num-server-rounds": 1, "min-sites": 3, "fraction-evaluate": 0.0, "strategy.robust": "median"}
    contexts = {100 + i: node_context(i, 3) for i in range(3)}
    summary = run_in_process(cfg, contexts, wrap={102: x100})
    entry = summary["rounds"][0]
    assert entry["aggregated"] and not entry["rejected"]
    robust = entry["robust"]
    assert robust["mode"] == "median" and robust["factor"] == 2.0
    assert robust["flagged"] == ["site-03"]  # by name, as in the train and eval blocks
    assert set(robust["per_site"]) == {"site-01", "site-02", "site-03"}
    attacker = robust["per_site"]["site-03"]
    assert attacker["bounded"] and attacker["norm"] > 20 * robust["bound"]
    assert attacker["scale"] == pytest.approx(robust["bound"] / attacker["norm"])
    assert robust["bound"] == pytest.approx(2.0 * robust["median_norm"])
    assert read_summary(tmp_path / "run")["rounds"][0]["robust"] == robust  # what summary.json holds
    assert np.isfinite([v["norm"] for v in robust["per_site"].values()]).all()
