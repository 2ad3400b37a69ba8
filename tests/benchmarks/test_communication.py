"""The communication study's arithmetic (``benchmarks/communication.py``): bytes per site and
round from a run's ``summary.json``, each stage over the sites that took part in it."""
from __future__ import annotations

import pytest

from benchmarks.communication import per_site


def round_(train_sites: int, eval_sites: int, down_train: int, up_train: int, down_eval: int) -> dict:
    return {"bytes": {"down_train": down_train, "up_train": up_train, "down_evaluate": down_eval, "up_evaluate": 0},
            "train": {"per_site": {f"s{i}": {} for i in range(train_sites)}},
            "eval": {"per_site": {f"s{i}": {} for i in range(eval_sites)}}}


def test_bytes_are_divided_by_each_stages_participants_and_averaged_over_rounds():
    summary = {"sites": {"1": "s0", "2": "s1", "3": "s2"},
               "rounds": [round_(3, 2, 300, 150, 200), round_(2, 2, 200, 100, 200)]}
    got = per_site(summary)
    assert got["down_train"] == pytest.approx(100) and got["up_train"] == pytest.approx(50)
    assert got["down_evaluate"] == pytest.approx(100) and got["up_evaluate"] == 0
    assert got["down"] == pytest.approx(200) and got["up"] == pytest.approx(50)


def test_a_round_without_per_site_lists_counts_every_site():
    summary = {"sites": {"1": "a", "2": "b"},
               "rounds": [{"bytes": {"down_train": 10, "up_train": 6, "down_evaluate": 4, "up_evaluate": 2}}]}
    assert per_site(summary) == {"down_train": 5, "up_train": 3, "down_evaluate": 2, "up_evaluate": 1,
                                 "down": 7, "up": 4}
