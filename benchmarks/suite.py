"""Run the benchmark suite: every built study of ``benchmarks.studies``, each step a subprocess.

    python -m benchmarks                      # every built study, full scale (hours on 2 cores)
    python -m benchmarks --quick              # every built study, reduced
    python -m benchmarks --only compute robust
    python -m benchmarks --list               # the studies, built or not, and what is done

Resumable: each finished step is recorded in ``suite.json`` (``suite-quick.json`` with
``--quick``) under the results folder, with its arguments, the SHA-256 of its JSON file, its
wall time, date, machine and versions. A step whose record matches (same mode and arguments,
its file unchanged) is skipped unless ``--force``. A failed step is reported and the suite
goes on; the exit status is 1 when any step failed. Each step's output goes to the terminal
and to ``logs/<script>[-quick].log`` under the results folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from benchmarks.report import cpu_model
from benchmarks.studies import HERE, MODES, RESULTS, STUDIES, Step, Study, by_name, suffix

ROOT = HERE.parent
PACKAGES = ("torch", "flwr", "opacus", "numpy")
ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1"}




def git_commit(root: Path = ROOT) -> str | None:
    """The checkout's short commit, ``+dirty`` when tracked files other than the suite's own
    records (``benchmarks/results/``) changed; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)benchmarks/results")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict[str, Any]:
    """Where a step ran: CPU, cores, OS, Python, package versions, commit."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions, "commit": git_commit()}


def manifest_path(results: Path, mode: str) -> Path:
    """``suite.json`` (full) or ``suite-quick.json`` under ``results``."""
    return Path(results) / f"suite{suffix(mode)}.json"


def load_manifest(results: Path, mode: str) -> dict[str, Any]:
    """The records of the finished steps in ``mode`` (empty when none)."""
    path = manifest_path(results, mode)
    if path.is_file():
        return json.loads(path.read_text())
    return {"mode": mode, "steps": {}}


def save_manifest(results: Path, mode: str, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically."""
    path = manifest_path(results, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def step_key(study: Study, step: Step) -> str:
    """The record's key: ``study/script``."""
    return f"{study.name}/{step.script}"


def portable_args(step: Step, mode: str, results: Path) -> list[str]:
    """The step's arguments with the results folder written ``{results}`` (comparable across checkouts)."""
    return [a.replace(str(results), "{results}") for a in step.args(mode, results)]


def relative(path: Path, results: Path) -> str:
    """``path`` relative to ``results`` when inside it, else absolute."""
    try:
        return str(Path(path).relative_to(results))
    except ValueError:
        return str(path)


def record_valid(entry: dict[str, Any] | None, results: Path) -> bool:
    """A record of a step that succeeded and whose file is still the one it wrote."""
    if not entry or entry.get("status") != "ok":
        return False
    out = Path(results) / entry["output"]
    return out.is_file() and sha256(out) == entry.get("sha256")


def is_done(manifest: dict[str, Any], study: Study, step: Step, mode: str, results: Path) -> bool:
    """Whether the step finished in this mode, with these arguments, and its file is unchanged."""
    entry = manifest["steps"].get(step_key(study, step))
    return record_valid(entry, results) and entry.get("args") == portable_args(step, mode, results)


def run_step(study: Study, step: Step, mode: str, results: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Run one step as a subprocess, its output to the terminal and a log; its record."""
    log = Path(results) / "logs" / f"{step.script}{suffix(mode)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    out = step.output(mode, results)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    env = {**os.environ, **ENV}
    with log.open("w") as sink, subprocess.Popen(step.argv(mode, results), cwd=ROOT, env=env, text=True,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            sink.write(line)
            say("    | " + line.rstrip("\n"))
    ok_file = proc.returncode == 0 and out.is_file()
    status = "ok" if ok_file else ("no output" if proc.returncode == 0 else "failed")
    return {"study": study.name, "script": step.script, "mode": mode, "args": portable_args(step, mode, results),
            "output": relative(out, results), "status": status, "returncode": proc.returncode,
            "sha256": sha256(out) if ok_file else None, "started": started,
            "wall_seconds": round(time.perf_counter() - t0, 1), "log": relative(log, results), "machine": machine()}


def run_suite(studies: tuple[Study, ...], mode: str, results: Path, force: bool = False,
              say: Callable[[str], None] = print) -> int:
    """Run every step of the built ``studies`` not done yet; 0 when none failed, else 1."""
    results = Path(results).resolve()
    manifest = load_manifest(results, mode)
    steps = [(study, step) for study in studies for step in study.steps]
    failed = 0
    for i, (study, step) in enumerate(steps, 1):
        head = f"[suite] ({i}/{len(steps)}) {study.name}: {step.script} ({mode})"
        if not force and is_done(manifest, study, step, mode, results):
            entry = manifest["steps"][step_key(study, step)]
            say(f"{head}: done on {entry['started']}, skipped (--force reruns it)")
            continue
        say(f"{head}: running {relative(step.script_path(), ROOT)} {' '.join(step.args(mode, results))}")
        entry = run_step(study, step, mode, results, say)
        manifest["steps"][step_key(study, step)] = entry
        save_manifest(results, mode, manifest)
        bad = entry["status"] == "failed" or (entry["status"] == "no output" and not step.optional)
        failed += bad
        say(f"{head}: {entry['status']} in {entry['wall_seconds']:.0f} s"
            + (f" -> {entry['output']}" if entry["status"] == "ok" else f" (log: {entry['log']})"))
    for study in studies:
        if not study.built:
            say(f"[suite] {study.name}: not built ({study.missing}); nothing run")
    say(f"[suite] {len(steps)} step(s), {failed} failed; records in {manifest_path(results, mode)}")
    return 1 if failed else 0


def listing(studies: tuple[Study, ...], results: Path) -> str:
    """One line per study: name, built or not, its scripts, which modes are done, what it measures."""
    manifests = {mode: load_manifest(results, mode) for mode in MODES}
    lines = [f"{'study':<17}{'status':<11}{'scripts':<30}{'done':<12}measures"]
    for study in studies:
        done = [mode for mode in MODES if study.built and all(
            is_done(manifests[mode], study, step, mode, results) for step in study.steps)]
        scripts = ", ".join(step.script for step in study.steps) or "-"
        status = "built" if study.built else "not built"
        note = "" if study.built else f" ({study.missing})"
        lines.append(f"{study.name:<17}{status:<11}{scripts:<30}{', '.join(done) or '-':<12}{study.measures}{note}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    names = [s.name for s in STUDIES]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every study reduced (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"these studies: {', '.join(names)}")
    parser.add_argument("--list", action="store_true", help="list the studies and what is done, run nothing")
    parser.add_argument("--force", action="store_true", help="rerun steps that are already done")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse(argv)
    results = args.results.resolve()
    studies = tuple(by_name()[n] for n in args.only) if args.only else STUDIES
    if args.list:
        print(listing(studies, results))
        return 0
    unbuilt = [s.name for s in studies if not s.built]
    if args.only and unbuilt:
        print(f"not built yet: {', '.join(unbuilt)} (python -m benchmarks --list)", file=sys.stderr)
        return 2
    return run_suite(studies, "quick" if args.quick else "full", results, force=args.force,
                     say=lambda s: print(s, flush=True))
