"""A deployed site's start-up per Flower message: from "message received" to the first step.

In a deployment every Flower message is handled by a fresh ClientApp process, so whatever a
handler does before training is paid once per message. This benchmark generates a small
synthetic site (``mpdrm.data.synth.generate_cohort``, one site), prepares it once, then
times ``--repeats`` fresh subprocesses, each handling one train message with the real
``client.handlers.handle_train`` (deployment node config ``data-path`` / ``state-dir``,
run config = ``pyproject.toml``'s ``[tool.flwr.app.config]``, torch limited to one thread):

- ``imports_s``: process launch (by the parent) -> Python started and ``client.app`` imported;
- ``site_data_s``: ``site_data(...)`` inside the handler (loading the site's prepared data);
- ``model_build_s``: ``build_site_model(...)`` inside the handler;
- ``first_step_s``: handler entry -> first training step done (``train_local`` run with
  ``max_steps=1``; it includes the two above, loading the weights, the loader and the step);
- ``handler_s``: the whole ``handle_train`` call (also saving state and the reply).

Each phase is reported as wall seconds and as this process's CPU seconds (user + system;
less disturbed by other load on a shared machine), median over the runs.

    python benchmarks/site_startup.py [OUT.json] [--repeats 3] [--repo DIR] [--label NAME]
                                      [--compare OTHER.json]

``--repo`` benchmarks another checkout of the code (e.g. ``git worktree add /tmp/before
HEAD``) with this virtual environment; ``--compare`` puts an earlier report's medians next
to this run's. Writes JSON (default ``benchmarks/results/site_startup.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PHASES = ("imports_s", "site_data_s", "model_build_s", "first_step_s", "handler_s")
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENCV_LOG_LEVEL": "ERROR",
       "FLWR_TELEMETRY_ENABLED": "0", "PYTHONHASHSEED": "0"}


def run_config(repo: Path) -> dict[str, Any]:
    """The app's default run config, flattened the way Flower hands it to a ClientApp."""
    tree = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    return flat(tree)


def cpu_name() -> str:
    """``lscpu``'s model name (``platform.processor()`` as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- parent

def train_message(arrays: Any) -> Any:
    """A round-1 train instruction carrying ``arrays`` (a flwr ArrayRecord)."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def site_context(site: str, state_dir: str, cfg: dict[str, Any]) -> Any:
    """A deployed node's context: node config ``data-path``, ``state-dir``, ``site-id``."""
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=7, state=RecordDict(), run_config=cfg,
                   node_config={"data-path": site, "state-dir": state_dir, "site-id": 1})


class _Probed(Exception):
    pass


def initial_arrays(site: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """The shared weights a server sends in round 1, found by the handler itself: its model
    and the names it checks the inbound arrays against."""
    import client.handlers as handlers
    from flwr.app import ArrayRecord

    seen: dict[str, Any] = {}
    build, check = handlers.build_site_model, handlers.check_inbound

    def keep_model(*a, **kw):
        seen["model"] = build(*a, **kw)
        return seen["model"]

    def keep_names(incoming, names, *a, **kw):
        seen["names"] = list(names)
        raise _Probed
    handlers.build_site_model, handlers.check_inbound = keep_model, keep_names
    try:
        handlers.handle_train(train_message(ArrayRecord()), site_context(site, str(work / "probe"), cfg))
    except _Probed:
        pass
    finally:
        handlers.build_site_model, handlers.check_inbound = build, check
    state = seen["model"].state_dict()
    return {n: state[n].detach().cpu().numpy() for n in seen["names"]}


def setup(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Generate and prepare the site once; save the initial shared weights a server sends."""
    import numpy as np

    from mpdrm.data.prepare import prepare_site
    from mpdrm.data.synth import generate_cohort

    from mpdrm.contract.site_data import prepare_config, site_data

    cohort = generate_cohort(work / "cohort", sites=1, subjects=8, visits=3, seconds=8.0,
                             seed=0, workers=1)
    site = Path(cohort) / "site-01"
    t0 = time.perf_counter()
    prep = prepare_site(site, prepare_config(cfg), workers=1, progress=False)
    prepare_s = time.perf_counter() - t0
    np.savez(work / "arrays.npz", **initial_arrays(str(site), work, cfg))
    return {"site": str(site), "videos": len(prep.entries), "clips": prep.num_clips,
            "train_clips": len(site_data(site, cfg).train), "prepare_s": round(prepare_s, 3)}


def run_child(work: Path, repo: Path, site: str, cfg: dict[str, Any], k: int) -> dict[str, Any]:
    """One fresh process handling one train message; its timings."""
    spec = {"repo": str(repo), "site": site, "state_dir": str(work / f"state-{k}"),
            "arrays": str(work / "arrays.npz"), "run_config": cfg, "launched": time.time()}
    spec_path = work / f"spec-{k}.json"
    spec_path.write_text(json.dumps(spec))
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                         capture_output=True, text=True, env={**os.environ, **ENV}, cwd=repo)
    if res.returncode != 0:
        raise RuntimeError(f"child {k} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {p: round(statistics.median(r[p] for r in runs), 4) for p in PHASES}


def table(columns: dict[str, dict[str, Any]]) -> str:
    """Median wall and CPU seconds per phase, one column pair per report."""
    names = list(columns)
    lines = [f"{'phase (median, s)':<20}" + "".join(f"{n + ' wall':>14}{n + ' cpu':>14}"
                                                      for n in names)]
    for p in PHASES:
        lines.append(f"{p:<20}" + "".join(f"{columns[n]['median'][p]:>14.3f}"
                                          f"{columns[n]['median_cpu'][p]:>14.3f}"
                                          for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(HERE / "results" / "site_startup.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repo", default=str(HERE.parent), help="checkout of the code to time")
    ap.add_argument("--label", default="current")
    ap.add_argument("--compare", help="an earlier report of this benchmark (e.g. before)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(Path(args.child))
    repo = Path(args.repo).resolve()
    sys.path.insert(0, str(repo))
    sys.path.insert(1, str(HERE))
    from report import write_report  # noqa: PLC0415  (benchmarks/ is the script's folder)

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    cfg = run_config(repo)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="site-startup-") as tmp:
        work = Path(tmp)
        info = setup(work, cfg)
        runs = [run_child(work, repo, info["site"], cfg, k) for k in range(args.repeats)]
    report = {"label": args.label, "repo": str(repo), "cpu": cpu_name(),
              "cores": os.cpu_count(), "torch_threads": 1, "repeats": args.repeats,
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "site": {k: v for k, v in info.items() if k != "site"},
              "median": medians(runs), "median_cpu": medians([r["cpu"] for r in runs]),
              "runs": runs}
    columns = {args.label: report}
    if args.compare:
        other = json.loads(Path(args.compare).read_text())
        report["compare"] = {k: other[k] for k in ("label", "median", "median_cpu", "cpu",
                                                    "load_average")}
        columns = {other["label"]: other, **columns}
    print(f"CPU: {report['cpu']} ({report['cores']} cores), torch threads 1, "
          f"median of {args.repeats}; site: {info['videos']} videos, {info['clips']} clips")
    print(table(columns))
    write_report(args.out, report)
    return 0


# ----------------------------------------------------------------------------- child

def child(spec_path: Path) -> int:
    """Handle one train message in this fresh process, print the timings as JSON."""
    spec = json.loads(spec_path.read_text())
    sys.path.insert(0, spec["repo"])
    import dataclasses

    import torch
    torch.set_num_threads(1)
    import client.app  # noqa: F401  (what a ClientApp process imports)
    import client.handlers as handlers
    imported, cpu_imported = time.time(), time.process_time()
    import numpy as np
    from flwr.app import Array, ArrayRecord

    with np.load(spec["arrays"]) as npz:
        arrays = ArrayRecord({n: Array(np.asarray(npz[n])) for n in npz.files})
    message = train_message(arrays)
    context = site_context(spec["site"], spec["state_dir"], spec["run_config"])
    marks: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            t, c = time.perf_counter(), time.process_time()
            out = fn(*a, **kw)
            marks[name] = time.perf_counter() - t
            marks["cpu_" + name] = time.process_time() - c
            marks[name + "_end"] = time.perf_counter()
            marks["cpu_" + name + "_end"] = time.process_time()
            return out
        return wrapper

    one_step = handlers.train_local
    handlers.site_data = timed("site_data_s", handlers.site_data)
    handlers.build_site_model = timed("model_build_s", handlers.build_site_model)
    handlers.train_local = timed("train_s", lambda model, loader, tcfg, **kw: one_step(
        model, loader, dataclasses.replace(tcfg, max_steps=1), **kw))
    start, cpu_start = time.perf_counter(), time.process_time()
    handlers.handle_train(message, context)
    end, cpu_end = time.perf_counter(), time.process_time()
    out = {"imports_s": imported - spec["launched"], "site_data_s": marks["site_data_s"],
           "model_build_s": marks["model_build_s"],
           "first_step_s": marks["train_s_end"] - start, "handler_s": end - start,
           "cpu": {"imports_s": cpu_imported, "site_data_s": marks["cpu_site_data_s"],
                   "model_build_s": marks["cpu_model_build_s"],
                   "first_step_s": marks["cpu_train_s_end"] - cpu_start,
                   "handler_s": cpu_end - cpu_start},
           "mpdrm_data": sys.modules["mpdrm.data.dataset"].__file__}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
