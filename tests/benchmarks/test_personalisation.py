"""The personalisation study's bookkeeping (``benchmarks/personalisation.py``): which overrides a
scale gives, which finished runs are reused, and the table's figures."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.personalisation import QUICK, Cell, Scale, finished, plan, process_seconds, row, settings_of, table


def test_the_default_scale_is_the_default_run():
    assert Scale().overrides() == []
    assert Scale(rounds=2, extra=("train.lr=1e-4",)).overrides() == ["rounds=2", "train.lr=1e-4"]
    assert "resources.client_cpus=1" in QUICK.overrides() and "prepare.max_clips=2" in QUICK.overrides()


def _finish(work: Path, cell: Cell, scale: Scale, rmse: float) -> None:
    run = work / cell.name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"final": {"rmse": rmse, "subject_bias_rmse": rmse / 2},
                                                  "reference": {"oracle": {"rmse": 0.05}}, "rounds": []}))
    (run / "study_settings.json").write_text(settings_of(cell, scale))
    (run / "study_wall.json").write_text(json.dumps({"process_seconds": 12.5}))


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path: Path):
    cell = Cell("mpdrm", "visits", 0)
    _finish(tmp_path, cell, Scale(), 0.2)
    assert finished(cell, Scale(), tmp_path)["final"]["rmse"] == 0.2
    assert finished(cell, Scale(rounds=2), tmp_path) is None
    assert finished(Cell("mpdrm", "visits", 1), Scale(), tmp_path) is None
    (tmp_path / cell.name / "summary.json").write_text(json.dumps({"final": {}, "reference": {}}))
    assert finished(cell, Scale(), tmp_path) is None  # an unfinished run is not reused


def test_rows_and_table_carry_the_model_the_references_and_the_error_split(tmp_path: Path):
    cells = [Cell("mpdrm", "visits", s) for s in (0, 1)]
    for cell, rmse in zip(cells, (0.2, 0.3)):
        _finish(tmp_path, cell, Scale(), rmse)
    rows = [row(c, finished(c, Scale(), tmp_path), process_seconds(c, tmp_path)) for c in cells]
    assert rows[0]["process_seconds"] == 12.5 and rows[1]["subject_bias_rmse"] == 0.15
    text = table(rows, ("variant", "protocol"))
    assert "| mpdrm | visits | 2 | 0.250 ± 0.071 | 0.050 ± 0.000 | n/a | n/a | n/a | n/a | 0.125 ± 0.035 | n/a |" in text


def test_the_plan_scores_every_headline_protocol_and_the_confound_sweep_on_visits():
    head = plan("headline", [0, 1], [0], [0.0])
    assert {(c.variant, c.protocol) for c in head} == {(v, p) for v in ("mpdrm", "no_mpfn", "fedavg_full")
                                                       for p in ("visits", "subjects", "enrolled")}
    assert {c.protocol for c in plan("confound", [0], [0, 1], [0.0, 2.0])} == {"visits"}
