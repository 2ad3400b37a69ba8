"""The federation-overhead and time-to-accuracy studies' arithmetic on hand-made summaries, and
the isolated training step on the real model."""
from __future__ import annotations

import json

import pytest

from benchmarks.federation_overhead import isolated_clips_per_second, loop_figures, pair_row, run_figures
from benchmarks.paired_runs import Pair, round_clock, train_clip_steps
from benchmarks.time_to_accuracy import first_reached, seed_row, table


def _site(steps: int, rate: float, seconds: float) -> dict:
    return {"train-steps": steps, "train-examples_per_second": rate, "train-seconds": seconds, "num-examples": 16}


def federated() -> dict:
    """2 sites, 2 rounds, batch 8, 2 epochs: each reply trained 4 steps (32 clips) at 16 clips/s
    (a 2 s loop) inside a 3 s handler."""
    rounds = [{"round": r, "wall_seconds": 10.0 + 10 * r, "eval": {"rmse": rmse},
               "train": {"num-examples": 32, "per_site": {"a": _site(4, 16.0, 3.0), "b": _site(4, 16.0, 3.0)}}}
              for r, rmse in ((1, 0.30), (2, 0.18))]
    return {"config": {"data.batch_size": 8, "train.epochs": 2}, "initial": {"wall_seconds": 10.0, "eval": {"rmse": 0.5}},
            "rounds": rounds, "final": {"rmse": 0.18}, "wall_seconds": 31.0, "engine_seconds": 41.0,
            "process_seconds": 45.0, "reference": {"oracle": {"rmse": 0.05}}}


def centralized() -> dict:
    """The same 64 clip-steps per round in one 4 s loop a round."""
    rounds = [{"round": r, "wall_seconds": 1.0 + 5 * r, "eval": {"rmse": rmse},
               "train": {"num-examples": 32, "train-seconds": 4.0, "train-examples_per_second": 16.0, "per_site": {}}}
              for r, rmse in ((1, 0.15), (2, 0.12))]
    return {"config": {"data.batch_size": 8, "train.epochs": 2}, "initial": {"wall_seconds": 1.0, "eval": {"rmse": 0.5}},
            "rounds": rounds, "final": {"rmse": 0.12}, "wall_seconds": 11.5, "engine_seconds": 15.5,
            "process_seconds": 18.0}


def test_loop_seconds_come_from_the_loops_rate_not_the_sites_whole_handler() -> None:
    clips, loop, stage = loop_figures(federated())
    assert clips == 4 * 32 and loop == pytest.approx(4 * 2.0) and stage == pytest.approx(4 * 3.0)
    clips, loop, stage = loop_figures(centralized())
    assert clips == pytest.approx(2 * 64) and loop == stage == pytest.approx(8.0)


def test_run_figures_split_the_wall_into_start_up_loop_and_the_rest() -> None:
    f = run_figures(federated())
    assert f["startup"] == pytest.approx(10.0) and f["seconds_per_round"] == pytest.approx(10.0)
    assert f["other_seconds"] == pytest.approx(31.0 - 8.0) and f["clips_per_second"] == pytest.approx(16.0)
    assert f["run_clips_per_second"] == pytest.approx(128 / 31.0) and f["clip_steps"] == train_clip_steps(federated())


def test_a_pair_is_compared_only_on_the_same_work() -> None:
    row = pair_row(Pair(0, federated(), centralized()))
    assert row["wall_ratio"] == pytest.approx(31.0 / 11.5) and row["rmse_ratio"] == pytest.approx(0.18 / 0.12)
    other = centralized()
    other["config"]["train.epochs"] = 1
    with pytest.raises(ValueError, match="not the same work"):
        pair_row(Pair(0, federated(), other))


def test_time_to_accuracy_counts_only_trained_rounds() -> None:
    clock = round_clock(federated())
    assert clock[0] == (0, 10.0, 0.5)
    assert first_reached(clock, 0.2) == {"round": 2, "seconds": 30.0, "rmse": 0.18}
    assert first_reached(clock, 0.6)["round"] == 1  # the untrained model's 0.5 does not count
    assert first_reached(clock, 0.1) == {"round": None, "seconds": None, "best_rmse": 0.18}
    row = seed_row(Pair(3, federated(), centralized()), 0.2)
    assert row["ratio"] == pytest.approx(30.0 / 6.0)
    assert "30.0 s (round 2)" in table([row], 0.2) and "| 3 |" in table([row], 0.2)


def test_the_isolated_step_trains_the_runs_model() -> None:
    from mpdrm.contract.runconfig import merged
    from tests.federation.sim_helpers import TINY_RUN

    got = isolated_clips_per_second(merged(TINY_RUN), threads=1, warmup=1, timed=2)
    assert got["batch"] == int(TINY_RUN["data.batch_size"]) and got["threads"] == 1
    assert got["clips_per_second"] > 0 and got["input"][-1] == int(TINY_RUN["model.image_size"])


def test_the_readme_renders_both_reports() -> None:
    from benchmarks import render_results
    from benchmarks.federation_overhead import summarise

    rows = [pair_row(Pair(s, federated(), centralized())) for s in (0, 1)]
    isolated = {"batch": 8, "threads": 2, "clips_per_second": 20.0}
    lines = render_results.TABLES["federation_overhead"]({"rows": rows, "isolated": isolated,
                                                         "summary": summarise(rows, isolated)})
    assert "| 1 | federated | 31.0 | 10.0 | 10.0 | 8.0 | 12.0 | 23.0 | 16.0 | 0.80 | 0.21 | 0.180 |" in lines
    assert any("final RMSE 1.50 ± 0.00 (target <= 1.15)" in line for line in lines)
    tta = render_results.TABLES["time_to_accuracy"]({"rows": [seed_row(Pair(0, federated(), centralized()), 0.2)],
                                                    "target_rmse": 0.2})
    assert "| 0 | 30.0 s (round 2) | 6.0 s (round 1) | 5.00 | 0.050 | - | - |" in tta


def test_a_paired_run_is_reused_only_when_it_finished_with_the_same_overrides(tmp_path) -> None:
    from benchmarks.paired_runs import finished, overrides

    run_dir = tmp_path / "mpdrm-s0"
    wanted = overrides(("rounds=2",), "mpdrm", 0, run_dir)
    assert wanted[-3:] == ["strategy=mpdrm", "seed=0", f"run_dir={run_dir}"]
    run_dir.mkdir()
    (run_dir / "bench_overrides.json").write_text(json.dumps(wanted))
    assert not finished(run_dir, wanted)  # no summary: the run did not finish
    (run_dir / "summary.json").write_text("{}")
    assert finished(run_dir, wanted)
    assert not finished(run_dir, overrides(("rounds=3",), "mpdrm", 0, run_dir))
