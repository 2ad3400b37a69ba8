"""The suite runner (``python -m benchmarks``): its registry, and which steps it runs, skips and
reruns, with fake benchmark scripts run as real subprocesses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import render_results, suite
from benchmarks.studies import HERE, STUDIES, Step, Study, by_name

ROOT = HERE.parent

FAKE = """\
import json, pathlib, sys
args = sys.argv[1:]
with open(pathlib.Path(__file__).with_suffix(".calls"), "a") as f:
    f.write(" ".join(args) + "\\n")
print("fake benchmark says hello")
if "--fail" in args:
    sys.exit(3)
if "--silent" not in args:
    pathlib.Path(args[args.index("--out") + 1]).write_text(json.dumps({"args": args}))
"""


def fake_step(tmp_path: Path, name: str, full: tuple[str, ...] = (), quick: tuple[str, ...] = ("--quick",),
              optional: bool = False) -> Step:
    """A step whose script records each call in ``<name>.calls`` and writes its JSON (or not)."""
    script = tmp_path / f"{name}.py"
    script.write_text(FAKE)
    return Step(name, full=full, quick=quick, optional=optional, path=script)


def calls(tmp_path: Path, name: str) -> list[str]:
    """The argument lines of every run of the fake script ``name``."""
    path = tmp_path / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []


def run(studies: tuple[Study, ...], results: Path, mode: str = "full", force: bool = False) -> tuple[int, str]:
    """``run_suite`` with its progress collected."""
    said: list[str] = []
    rc = suite.run_suite(studies, mode, results, force=force, say=said.append)
    return rc, "\n".join(said)


def test_the_registry_maps_the_issue_studies_to_existing_scripts():
    studies = by_name()
    assert {s.script for s in studies["accuracy"].steps} == {"personalisation"}
    assert {s.script for s in studies["privacy"].steps} == {"dp_overhead", "dp_recipe"}
    assert {s.script for s in studies["compute"].steps} == {"model_cost", "ingest_speed"}
    assert {s.script for s in studies["robust"].steps} == {"robust_influence"}
    assert {s.script for s in studies["communication"].steps} == {"communication"}
    assert {s.script for s in studies["scale"].steps} == {"scale"}
    assert {s.script for s in studies["federation"].steps} == {"federation_overhead"}
    assert {s.script for s in studies["time_to_accuracy"].steps} == {"time_to_accuracy"}
    assert [n for n, s in studies.items() if not s.built] == []
    steps = [step for study in STUDIES for step in study.steps]
    assert all(step.script_path().is_file() for step in steps)
    assert {step.script for step in steps} <= set(render_results.TABLES)  # every step has a README table


def test_each_mode_has_its_own_file_and_the_output_goes_where_the_script_takes_it(tmp_path: Path):
    option, positional = Step("a", quick=("--x",)), Step("b", out="")
    fixed = Step("c", out=None, fixed=("c.json", "c_quick.json"))
    assert option.args("full", tmp_path) == ["--out", str(tmp_path / "a.json")]
    assert option.args("quick", tmp_path) == ["--x", "--out", str(tmp_path / "a-quick.json")]
    assert positional.args("quick", tmp_path) == [str(tmp_path / "b-quick.json"), "--quick"]
    assert fixed.args("quick", tmp_path) == ["--quick"] and fixed.output("quick", tmp_path).name == "c_quick.json"
    work = Step("d", full=("--work", "{results}/runs{suffix}"), quick=("--work", "{results}/runs{suffix}"))
    assert work.args("quick", tmp_path)[:2] == ["--work", f"{tmp_path}/runs-quick"]
    with pytest.raises(ValueError):
        option.output("medium", tmp_path)


def test_a_finished_step_is_skipped_until_forced(tmp_path: Path):
    study = Study("one", "a fake", (fake_step(tmp_path, "alpha"),))
    results = tmp_path / "results"
    rc, said = run((study,), results)
    assert rc == 0 and len(calls(tmp_path, "alpha")) == 1 and "fake benchmark says hello" in said
    record = json.loads((results / "suite.json").read_text())["steps"]["one/alpha"]
    assert record["status"] == "ok" and record["output"] == "alpha.json" and record["machine"]["cpu"]
    assert "fake benchmark says hello" in (results / record["log"]).read_text()
    rc, said = run((study,), results)
    assert rc == 0 and len(calls(tmp_path, "alpha")) == 1 and "skipped" in said
    rc, _ = run((study,), results, force=True)
    assert rc == 0 and len(calls(tmp_path, "alpha")) == 2


def test_quick_and_full_are_recorded_apart(tmp_path: Path):
    study = Study("one", "a fake", (fake_step(tmp_path, "alpha"),))
    results = tmp_path / "results"
    run((study,), results, mode="full")
    run((study,), results, mode="quick")
    assert calls(tmp_path, "alpha") == [f"--out {results}/alpha.json", f"--quick --out {results}/alpha-quick.json"]
    assert (results / "suite.json").is_file() and (results / "suite-quick.json").is_file()
    run((study,), results, mode="full")
    run((study,), results, mode="quick")
    assert len(calls(tmp_path, "alpha")) == 2


def test_a_changed_file_or_changed_arguments_rerun_the_step(tmp_path: Path):
    results = tmp_path / "results"
    run((Study("one", "a fake", (fake_step(tmp_path, "alpha"),)),), results)
    (results / "alpha.json").write_text("{}")  # overwritten by a hand run
    run((Study("one", "a fake", (fake_step(tmp_path, "alpha"),)),), results)
    assert len(calls(tmp_path, "alpha")) == 2
    run((Study("one", "a fake", (fake_step(tmp_path, "alpha", full=("--seeds", "9")),)),), results)
    assert calls(tmp_path, "alpha")[-1].startswith("--seeds 9")


def test_a_failed_step_is_reported_the_rest_runs_and_it_is_retried(tmp_path: Path):
    results = tmp_path / "results"
    bad = Study("bad", "fails", (fake_step(tmp_path, "beta", full=("--fail",)),))
    good = Study("good", "works", (fake_step(tmp_path, "gamma"),))
    rc, said = run((bad, good), results)
    assert rc == 1 and "bad: beta (full): failed" in said and len(calls(tmp_path, "gamma")) == 1
    assert json.loads((results / "suite.json").read_text())["steps"]["bad/beta"]["returncode"] == 3
    rc, _ = run((bad, good), results)
    assert rc == 1 and len(calls(tmp_path, "beta")) == 2 and len(calls(tmp_path, "gamma")) == 1


def test_a_step_without_its_file_fails_unless_optional(tmp_path: Path):
    results = tmp_path / "results"
    required = Study("req", "writes nothing", (fake_step(tmp_path, "delta", full=("--silent",)),))
    optional = Study("opt", "may write nothing", (fake_step(tmp_path, "eps", full=("--silent",), optional=True),))
    assert run((required,), results)[0] == 1
    rc, said = run((optional,), results)
    assert rc == 0 and "no output" in said
    assert run((optional,), results)[0] == 0 and len(calls(tmp_path, "eps")) == 2  # never recorded as done


def test_the_command_line_lists_unbuilt_studies_and_refuses_to_run_them(tmp_path: Path):
    listed = subprocess.run([sys.executable, "-m", "benchmarks", "--list", "--results", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {s.name for s in STUDIES}
    assert all(("not built" in lines[n]) == (not s.built) for n, s in by_name().items())



def test_an_unbuilt_study_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    unbuilt = Study("future", "something not measured yet", missing="no script yet")
    monkeypatch.setattr(suite, "STUDIES", (unbuilt,))
    monkeypatch.setattr(suite, "by_name", lambda: {"future": unbuilt})
    assert suite.main(["--only", "future", "--results", str(tmp_path)]) == 2
    assert "not built yet: future" in capsys.readouterr().err
    assert not (tmp_path / "suite.json").exists()


def test_provenance_ignores_the_suites_own_records(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks/results/study.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    commit = suite.git_commit(tmp_path)
    assert commit and not commit.endswith("+dirty")
    (tmp_path / "benchmarks/results/study.json").write_text('{"rmse": 0.1}\n')
    assert suite.git_commit(tmp_path) == commit             # a study wrote its record
    (tmp_path / "code.py").write_text("x = 2\n")
    assert suite.git_commit(tmp_path) == commit + "+dirty"  # the code changed
