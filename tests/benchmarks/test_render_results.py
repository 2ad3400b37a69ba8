"""The README renderer (``benchmarks/render_results.py``) on small hand-made result files: it
replaces only the text between the markers, is idempotent, and ``--check`` sees staleness."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import render_results
from benchmarks.suite import save_manifest, sha256

ROOT = Path(__file__).resolve().parents[2]
MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "platform": "Linux", "python": "3.11.7",
           "versions": {"torch": "9.9.0", "flwr": "1.42.0", "opacus": "1.6.0", "numpy": "2.0"}, "commit": "abc1234"}
MODEL_COST = {"machine": {"torch_threads": 1}, "matmul_fp32_gflops": 117.5,
              "sizes": [{"size": "tiny", "gflop_per_clip_fwd_bwd": 3.342, "batch": 16, "clips_per_second": 11.62,
                         "achieved_gflops": 38.84, "fraction_of_matmul_peak": 0.3305}]}
ROBUST = {"table": {"clean": {"n": 2, "of": 2, "mean": 0.2442, "sd": 0.0621},
                    "attacked+robust": {"n": 2, "of": 2, "mean": 0.2466, "sd": 0.0466}},
          "reference": {"oracle": {"rmse": 0.0608}, "constant": {"rmse": 0.2178}}}
README = "# Title\n\nBefore: hand-written.\n\n<!-- results:begin -->\nold text\n<!-- results:end -->\n\nAfter.\n"


def record(results: Path, study: str, script: str, report: dict, mode: str = "full") -> dict:
    """Write ``report`` as the step's JSON and return the suite's record of it."""
    name = f"{script}{'' if mode == 'full' else '-quick'}.json"
    (results / name).write_text(json.dumps(report))
    return {"study": study, "script": script, "mode": mode, "args": [], "output": name, "status": "ok",
            "returncode": 0, "sha256": sha256(results / name), "started": "2026-11-29T10:00:00Z",
            "wall_seconds": 12.0, "log": "logs/x.log", "machine": MACHINE}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    steps = {"compute/model_cost": record(folder, "compute", "model_cost", MODEL_COST),
             "robust/robust_influence": record(folder, "robust", "robust_influence", ROBUST)}
    save_manifest(folder, "full", {"mode": "full", "steps": steps})
    return folder


def render(readme: Path, results: Path, *extra: str) -> int:
    return render_results.main(["--readme", str(readme), "--results", str(results), *extra])


def test_only_the_text_between_the_markers_changes(tmp_path: Path, results: Path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert render(readme, results) == 0
    text = readme.read_text()
    before, inside = text.split("<!-- results:begin -->")
    inside, after = inside.split("<!-- results:end -->")
    assert before == README.split("<!-- results:begin -->")[0] and after == README.split("<!-- results:end -->")[1]
    assert "old text" not in inside
    assert "| tiny | contiguous_format | 3.34 | 16 | 11.6 | 38.8 | 33 % |" in inside and "| clean | 2 of 2 | 0.244 ± 0.062 |" in inside
    assert "Test CPU 9000, 2 cores" in inside and "torch 9.9.0" in inside and "2026-11-29" in inside
    assert "Not run by the suite yet: accuracy, federation, communication, privacy," in inside
    assert not any(line.startswith("Not built yet:") for line in inside.splitlines())  # every study is built


def test_rendering_is_idempotent_and_check_sees_staleness(tmp_path: Path, results: Path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert render(readme, results, "--check") == 1 and readme.read_text() == README  # --check writes nothing
    render(readme, results)
    once = readme.read_text()
    render(readme, results)
    assert readme.read_text() == once and render(readme, results, "--check") == 0
    readme.write_text(once.replace("| tiny | contiguous_format | 3.34", "| tiny | contiguous_format | 9.99"))
    assert render(readme, results, "--check") == 1


def test_a_file_changed_since_the_suite_wrote_it_is_not_rendered(tmp_path: Path, results: Path):
    (results / "model_cost.json").write_text(json.dumps({**MODEL_COST, "matmul_fp32_gflops": 1.0}))
    text = render_results.render(results)
    assert "model_cost" not in text and "robust_influence" in text
    assert [p.name for p in render_results.sources(results, "full")] == ["suite.json", "robust_influence.json"]


def test_quick_records_render_only_in_quick_mode(tmp_path: Path):
    folder = tmp_path / "results"
    folder.mkdir()
    steps = {"compute/model_cost": record(folder, "compute", "model_cost", MODEL_COST, mode="quick")}
    save_manifest(folder, "quick", {"mode": "quick", "steps": steps})
    assert "No full run of the suite is recorded yet" in render_results.render(folder, "full")
    assert "reduced (`--quick`)" in render_results.render(folder, "quick")


def test_an_unexpected_file_is_named_not_fatal(tmp_path: Path, results: Path):
    steps = {"compute/model_cost": record(results, "compute", "model_cost", {"sizes": "?"})}
    save_manifest(results, "full", {"mode": "full", "steps": steps})
    assert "(no table: `model_cost.json` has an unexpected shape" in render_results.render(results)


def scale_report(holds: bool | None) -> dict:
    memory = {"peak_pss_mib": 2100.4, "peak_rss_mib": 3300.0, "client_actor_pss_mib": 410.0, "processes_at_peak": 15}
    rows = [{"sites": n, "concurrency": 2, "seconds_per_round": 0.9 * n, "initial_seconds": 12.0,
             "startup_seconds": 20.0, "memory": {**memory, "peak_pss_mib": 2000 + 2 * n}} for n in (8, 32, 64)]
    verdict = {"target": "memory grows with the active clients", "rule": "slope < 10 %", "holds": holds,
               "slope_over_client": 0.0049, "sites": 64, "sites_share_of_peak": 0.031}
    return {"per_site": "2 subjects x 1 visit", "rows": rows,
            "growth": {"memory": "PSS", "verdict": verdict, "memory_ratio": {"sites": [8, 64], "ratio": 1.062},
                       "fits": {"memory_pss_mib": {"slope": 2.0}, "memory_rss_mib": {"slope": 3.0},
                                "seconds_per_round": {"slope": 0.9}}}}


def test_the_scale_table_has_a_row_per_site_count_and_the_verdict():
    text = "\n".join(render_results.scale(scale_report(True)))
    assert "| 64 | 2 | 57.60 | 12.0 | 20.0 | 2128 | 3300 | 410 | 15 |" in text
    assert "2.00 MiB of peak PSS, 0.900 s per round" in text and "1.06x" in text
    assert "holds (what the sites add at 64 sites: 3.1 % of the peak" in text
    assert "missed (" in "\n".join(render_results.scale(scale_report(False)))
    assert "Most of it" not in text
    report = scale_report(None)
    report["growth"].update(by_kind_mib_per_site={"engine": 36.48, "client_actor": 22.1, "gcs": 0.1},
                            shmem_mib_per_site=14.6)
    text = "\n".join(render_results.scale(report))
    assert "unknown (" in text
    assert "Most of it per extra site: `engine` +36.5 MiB, `client_actor` +22.1 MiB (shared memory" in text
    assert "Ray's object store: 14.6 MiB)." in text and "`gcs`" not in text


def test_a_readme_without_markers_is_refused(tmp_path: Path, results: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        render(readme, results)


def test_the_repository_readme_has_the_markers_once():
    text = (ROOT / "README.md").read_text()
    assert text.count(render_results.BEGIN) == 1 and text.count(render_results.END) == 1
    assert text.index(render_results.BEGIN) < text.index(render_results.END)


def test_the_script_runs_from_its_path(tmp_path: Path, results: Path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_results.py"), "--readme", str(readme),
                           "--results", str(results)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| tiny | contiguous_format | 3.34 |" in readme.read_text()
