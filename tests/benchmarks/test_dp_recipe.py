"""The DP recipe study's verdicts and its README table (``benchmarks/dp_recipe.py``,
``benchmarks/render_results.py``) on hand-made figures: the issue's two targets at epsilon 8,
said per recipe, and ``site_mean`` (what a calibrated model that learned nothing scores) shown
beside the constant predictor."""
from __future__ import annotations

from benchmarks import render_results
from benchmarks.dp_recipe import verdicts


def _cell(rmses: list[float], constant: float = 0.25, site_mean: float | None = 0.20) -> dict:
    refs = {"oracle": {"mean": 0.05, "sd": 0.0}, "habit_blind": {"mean": 0.09, "sd": 0.0},
            "constant": {"mean": constant, "sd": 0.0}}
    if site_mean is not None:
        refs["site_mean"] = {"mean": site_mean, "sd": 0.0}
    mean = sum(rmses) / len(rmses)
    return {"runs": [{"seed": i, "rmse": r, "ccc": 0.5, "initial_rmse": 0.3} for i, r in enumerate(rmses)],
            "rmse": {"mean": mean, "sd": 0.0}, "references": refs}


def test_the_verdicts_say_met_and_missed_per_recipe_with_site_mean():
    table = {"pretrained/none": _cell([0.15, 0.15]), "pretrained/8": _cell([0.16, 0.16]),
             "scratch/none": _cell([0.15]), "scratch/8": _cell([0.30])}
    pretrained, scratch = verdicts(table)
    assert pretrained.startswith("pretrained: eps 8 / no DP = 1.07 (target <= 1.25: met)")
    assert "+36% below constant (target >= 30 %: met)" in pretrained
    assert "+20% below site_mean" in pretrained
    assert "= 2.00 (target <= 1.25: missed)" in scratch and "-20% below constant (target >= 30 %: missed)" in scratch


def test_the_initial_rmse_is_the_runs_evaluation_before_round_1():
    from benchmarks.dp_recipe import initial_rmse

    assert initial_rmse({"initial": {"eval": {"rmse": 0.21}}, "final": {"rmse": 0.1}}) == 0.21
    assert initial_rmse({"final": {"rmse": 0.1}}) is None


def test_a_recipe_without_both_levels_gets_no_verdict_and_old_files_lack_site_mean():
    assert verdicts({"scratch/none": _cell([0.2])}) == []
    (line,) = verdicts({"a/none": _cell([0.2], site_mean=None), "a/8": _cell([0.2], site_mean=None)})
    assert "site_mean" not in line


def test_the_readme_table_shows_every_reference_and_the_step_ratios():
    report = {"accuracy": {"pretrained/8": _cell([0.16, 0.18]), "old/none": _cell([0.2], site_mean=None)},
              "steps": {"clip_dp_over_no_dp": 1.37, "patient_dp_over_clip_dp": 0.99, "patient_dp_over_no_dp": 1.35}}
    text = "\n".join(render_results.dp_recipe(report))
    assert ("| recipe / epsilon | RMSE | CCC | RMSE before round 1 | oracle | habit_blind | site_mean | constant "
            "| seeds |") in text
    assert "| pretrained/8 | 0.170 ± 0.014 | 0.50 ± 0.00 | 0.300 ± 0.000 | 0.050 | 0.090 | 0.200 | 0.250 | 2 |" in text
    assert "| old/none | 0.200 ± 0.000 | 0.50 ± 0.00 | 0.300 ± 0.000 | 0.050 | 0.090 | n/a | 0.250 | 1 |" in text
    assert "patient-level / clip-level 0.99" in text
