"""Render the README's suite results from the suite's records in ``benchmarks/results/``.

Only the text between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md is
replaced. A step is rendered when ``suite.json`` records it as finished and its JSON file is
still the one it wrote (``python -m benchmarks``); the date, machine, versions and commit come
from those records. Studies without a record are named as not run by the suite, unbuilt
studies as not built.

    python benchmarks/render_results.py             # rewrite README.md between the markers
    python benchmarks/render_results.py --check     # exit 1 when README.md is out of date
    python benchmarks/render_results.py --sources   # the files it renders from (commit them)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

if not __package__:  # run as a script: the repository's package, not Opacus's ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.studies import RESULTS, STUDIES, Study  # noqa: E402
from benchmarks.suite import ROOT, load_manifest, manifest_path, record_valid, step_key  # noqa: E402

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
Table = list[str]


def num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``n/a`` for anything else."""
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def mean_sd(values: list[Any], digits: int = 3) -> str:
    """``mean ± sd`` of the numbers among ``values``."""
    xs = [v for v in values if isinstance(v, (int, float))]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.{digits}f} ± {sd:.{digits}f}"


def md(head: list[str], rows: list[list[Any]]) -> Table:
    """A markdown table."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def model_cost(d: dict[str, Any]) -> Table:
    """FLOPs per clip, clips/s and share of the matmul rate, per size and memory layout."""
    rows = [[s["size"], s.get("layout", "contiguous_format"), num(s["gflop_per_clip_fwd_bwd"], 2), s["batch"],
             num(s["clips_per_second"], 1), num(s["achieved_gflops"], 1),
             f"{100 * s['fraction_of_matmul_peak']:.0f} %"] for s in d["sizes"]]
    return [f"fp32 matmul: {num(d['matmul_fp32_gflops'], 0)} GFLOP/s, {d['machine']['torch_threads']} torch thread(s)",
            "", *md(["size", "layout", "GFLOP/clip", "batch", "clips/s", "GFLOP/s", "of matmul"], rows)]


def ingest_speed(d: dict[str, Any]) -> Table:
    """Source frames/s per worker and real-time factor, per path and worker count; for the Haar
    path also how well the face track follows the known face."""
    def track(r: dict[str, Any]) -> list[str]:
        if "on_face" not in r:
            return ["-", "-"]
        return [f"{100 * r['on_face']:.1f} %", num(r["track_error_on_face"], 3)]

    rows = [[r["path"] + (" (default)" if r.get("default") else ""), r["workers"],
             num(r["fps_per_worker"], 0), f"{num(r['rtf'], 1)}x", *track(r)] for r in d["results"]]
    return md(["path (detect every, fill)", "workers", "source frames/s per worker", "real-time factor",
               "frames on the face", "centre error there (face sides)"], rows)


def dp_overhead(d: dict[str, Any]) -> Table:
    """Plain and DP-SGD seconds per step, per size and per-sample gradient mode."""
    rows = []
    for size, r in d["sizes"].items():
        modes = [k[:-6] for k in r if k.endswith("_ratio")]
        rows.append([size, num(r["plain_s"]), *(f"{num(r[m + '_s'])} ({num(r[m + '_ratio'], 2)}x)" for m in modes)])
    modes = [k[:-6] for k in next(iter(d["sizes"].values())) if k.endswith("_ratio")]
    return md(["size", "plain s/step", *(f"`{m}` s/step" for m in modes)], rows)


def dp_recipe(d: dict[str, Any]) -> Table:
    """RMSE and CCC per recipe and epsilon, and the DP step-time ratios."""
    out: Table = []
    if d.get("accuracy"):
        refs = ("oracle", "habit_blind", "site_mean", "constant")
        rows = [[key, mean_sd([r["rmse"] for r in v["runs"]]), mean_sd([r["ccc"] for r in v["runs"]], 2),
                 mean_sd([r.get("initial_rmse") for r in v["runs"]]),
                 *(num((v["references"].get(ref) or {}).get("mean")) for ref in refs), len(v["runs"])]
                for key, v in d["accuracy"].items()]
        out += md(["recipe / epsilon", "RMSE", "CCC", "RMSE before round 1", *refs, "seeds"], rows)
    if d.get("steps"):
        s = d["steps"]
        out += ["", f"Step time: clip-level DP / no DP {num(s['clip_dp_over_no_dp'], 2)}, patient-level / "
                    f"clip-level {num(s['patient_dp_over_clip_dp'], 2)}, patient-level / no DP "
                    f"{num(s['patient_dp_over_no_dp'], 2)}."]
    return out


def personalisation(d: dict[str, Any]) -> Table:
    """RMSE against the oracle and constant references, per part, variant and protocol."""
    rows = []
    for part, members in d["rows"].items():
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in members:
            where = f"confound {r['confound']:g}" if part == "confound" else r["protocol"]
            groups.setdefault((r["variant"], where), []).append(r)
        rows += [[part, v, w, len(g), mean_sd([r["rmse"] for r in g]), mean_sd([r["oracle"] for r in g]),
                  mean_sd([r["constant"] for r in g])] for (v, w), g in groups.items()]
    return md(["part", "variant", "protocol", "seeds", "RMSE", "oracle", "constant"], rows)


def robust_influence(d: dict[str, Any]) -> Table:
    """Final RMSE per setting, with the cohort's references."""
    rows = [[k, f"{v['n']} of {v['of']}", f"{num(v['mean'])} ± {num(v['sd'])}"] for k, v in d["table"].items()]
    refs = d.get("reference") or {}
    return [*md(["setting", "seeds", "RMSE"], rows), "",
            f"References: constant {num((refs.get('constant') or {}).get('rmse'))}, "
            f"oracle {num((refs.get('oracle') or {}).get('rmse'))}."]


def dp_accuracy(d: dict[str, Any]) -> Table:
    """RMSE and CCC per epsilon (clip-level DP)."""
    rows = [[k, f"{num(v['stats']['rmse']['mean'])} ± {num(v['stats']['rmse']['std'])}",
             num(v["stats"]["ccc"]["mean"], 2), len(v["runs"])] for k, v in d["results"].items()]
    return md(["epsilon", "RMSE", "CCC", "seeds"], rows)


def allocator(d: dict[str, Any]) -> Table:
    """Step times and page faults with freed memory kept or returned."""
    rows = [[size, side, num(r[side]["plain_s"]), num(r[side]["dp_s"]), f"{r[side]['plain_faults']:.0f}"]
            for size, r in d["sizes"].items() for side in ("off", "on")]
    return md(["size", "keep freed memory", "plain s/step", "DP s/step", "faults/step (plain)"], rows)


def scoring_speed(d: dict[str, Any]) -> Table:
    """Video seconds scored per wall second, per size and thread count."""
    rows = [[r["size"], r["threads"], num(r["video_seconds_per_wall_second"], 2)] for r in d["results"]]
    return [f"Video: {d['video']}.", "", *md(["size", "threads", "video seconds per wall second"], rows)]


def site_startup(d: dict[str, Any]) -> Table:
    """Median wall and CPU seconds per start-up phase."""
    rows = [[phase, num(d["median"][phase]), num(d["median_cpu"][phase])] for phase in d["median"]]
    return md([f"phase (median of {d['repeats']})", "wall s", "CPU s"], rows)


def communication(d: dict[str, Any]) -> Table:
    """Bytes per site and round, down and up, over one copy of MPDRM's shared arrays."""
    rows = [[r["size"], f"`{r['strategy']}`", f"{r['per_site_round']['down'] / 1e6:.2f}",
             f"{r['per_site_round']['up'] / 1e6:.2f}", f"{num(r['down_over_floor'], 2)}x",
             f"{num(r['up_over_floor'], 2)}x", f"{r['mpdrm_floor'] / 1e6:.2f}"] for r in d["rows"]]
    return md(["size", "strategy", "down MB/site/round", "up MB/site/round", "down / floor", "up / floor",
               "floor MB"], rows)


def scale(d: dict[str, Any]) -> Table:
    """Seconds per round and peak memory of the whole process tree per number of sites, the
    growth per site and the verdict on the target."""
    rows = [[r["sites"], r["concurrency"], num(r["seconds_per_round"], 2), num(r["initial_seconds"], 1),
             num(r["startup_seconds"], 1), num(r["memory"]["peak_pss_mib"], 0), num(r["memory"]["peak_rss_mib"], 0),
             num(r["memory"]["client_actor_pss_mib"], 0), r["memory"]["processes_at_peak"]] for r in d["rows"]]
    g, v = d["growth"], d["growth"]["verdict"]
    fit, time_fit = g["fits"]["memory_pss_mib"] or g["fits"]["memory_rss_mib"], g["fits"]["seconds_per_round"]
    ratio = g["memory_ratio"]
    holds = {True: "holds", False: "missed", None: "unknown"}[v["holds"]]
    return [f"Per site: {d['per_site']}.", "",
            *md(["sites", "active clients", "s/round", "round 0 s", "start-up s", "peak PSS MiB", "peak RSS MiB",
                 "client PSS MiB", "processes at peak"], rows), "",
            f"Growth per extra site: {num(fit and fit['slope'], 2)} MiB of peak {g['memory']}, "
            f"{num(time_fit and time_fit['slope'], 3)} s per round; peak at {ratio['sites'][1]} sites over "
            f"{ratio['sites'][0]}: {num(ratio['ratio'], 2)}x. Target ({v['target']}): {holds} "
            f"(what the sites add at {v.get('sites')} sites: "
            f"{num(v.get('sites_share_of_peak') and 100 * v['sites_share_of_peak'], 1)} % of the peak; {v['rule']}).",
            *scale_holders(g)]


def scale_holders(growth: dict[str, Any]) -> Table:
    """The two kinds of process whose memory grows most per extra site, as a sentence."""
    slopes = list((growth.get("by_kind_mib_per_site") or {}).items())[:2]
    if not slopes:
        return []
    return ["", "Most of it per extra site: " + ", ".join(f"`{k}` {v:+.1f} MiB" for k, v in slopes)
            + f" (shared memory, Ray's object store: {num(growth.get('shmem_mib_per_site'), 1)} MiB)."]


def federation_overhead(d: dict[str, Any]) -> Table:
    """Per seed and run: wall, start-up, loop and the rest, throughput against the isolated step."""
    from benchmarks.federation_overhead import table

    return table(d["rows"], d["isolated"], d["summary"]).rstrip("\n").splitlines()


def time_to_accuracy(d: dict[str, Any]) -> Table:
    """Per seed: the time each run first reached the target RMSE, with the references."""
    from benchmarks.time_to_accuracy import table

    return table(d["rows"], d["target_rmse"]).rstrip("\n").splitlines()


def gpu_check(d: dict[str, Any]) -> Table:
    """Clips/s and finiteness of every training and DP check."""
    rows = [[f"{part} {k}", num(v["clips_per_second"], 1), "yes" if v["finite"] else "NO"]
            for part in ("train", "dp") for k, v in d[part].items()]
    sim = d.get("simulation")
    note = [] if sim is None else ["", f"2-site simulation: return code {sim['returncode']}."]
    return [f"Device: {d['device']}.", "", *md(["check", "clips/s", "finite loss"], rows), *note]


TABLES: dict[str, Callable[[dict[str, Any]], Table]] = {
    f.__name__: f for f in (model_cost, ingest_speed, dp_overhead, dp_recipe, personalisation, robust_influence,
                            communication, dp_accuracy, allocator, scoring_speed, site_startup, scale, gpu_check,
                            federation_overhead, time_to_accuracy)}


def step_table(script: str, path: Path) -> Table:
    """The step's table, or a line saying why there is none."""
    try:
        return TABLES[script](json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as e:
        print(f"render_results: no table for {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
        return [f"(no table: `{path.name}` has an unexpected shape, {type(e).__name__})"]


def valid_records(results: Path, mode: str) -> dict[str, dict[str, Any]]:
    """The manifest's records whose step finished and whose file is unchanged."""
    steps = load_manifest(results, mode)["steps"]
    return {k: e for k, e in steps.items() if record_valid(e, results)}


def provenance(records: list[dict[str, Any]]) -> str:
    """Dates, machines, versions and commits of the rendered records, in one sentence."""
    def distinct(f: Callable[[dict[str, Any]], str]) -> str:
        return "; ".join(sorted({f(e) for e in records}))
    dates = sorted(e["started"][:10] for e in records)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    machines = distinct(lambda e: f"{e['machine']['cpu']}, {e['machine']['cores']} cores")
    versions = distinct(lambda e: f"Python {e['machine']['python']}, " + ", ".join(
        f"{k} {v}" for k, v in e["machine"]["versions"].items()))
    commits = distinct(lambda e: str(e["machine"].get("commit")))
    return f"Run {when} on {machines}; {versions}; commit {commits}."


def study_block(study: Study, records: dict[str, dict[str, Any]], results: Path) -> Table:
    """A heading line and one table per recorded step of ``study``, each under the date, wall
    time and CPU of its record (a suite's records may come from several machines)."""
    out = [f"**{study.name}**: {study.measures}."]
    for step in study.steps:
        entry = records.get(step_key(study, step))
        if entry is None:
            out += ["", f"`{step.script}`: not run by the suite yet."]
            continue
        cpu = entry.get("machine", {}).get("cpu", "unknown CPU")
        out += ["", f"`{step.script}` ({entry['started'][:10]}, {entry['wall_seconds']:.0f} s, {cpu}):", "",
                *step_table(step.script, results / entry["output"])]
    return out


def render(results: Path = RESULTS, mode: str = "full", studies: tuple[Study, ...] = STUDIES) -> str:
    """The text between the markers."""
    records = valid_records(results, mode)
    kind = "full" if mode == "full" else "reduced (`--quick`)"
    lines = [f"<!-- rendered by benchmarks/render_results.py from {manifest_path(results, mode).name}; "
             "edit the renderer, not this text -->", ""]
    ran = [s for s in studies if s.built and any(step_key(s, p) in records for p in s.steps)]
    if not ran:
        lines += [f"No {kind} run of the suite is recorded yet: `python -m benchmarks`, then "
                  "`python benchmarks/render_results.py`."]
    else:
        lines += [f"From the {kind} suite (`python -m benchmarks`). "
                  + provenance([records[k] for k in sorted(records)])]
        for study in ran:
            lines += ["", *study_block(study, records, results)]
    waiting = [s.name for s in studies if s.built and s not in ran]
    if ran and waiting:
        lines += ["", f"Not run by the suite yet: {', '.join(waiting)}."]
    unbuilt = [f"{s.name} ({s.measures})" for s in studies if not s.built]
    if unbuilt:
        lines += ["", f"Not built yet: {'; '.join(unbuilt)}."]
    return "\n".join(lines)


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with everything between the two markers replaced by ``body``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {BEGIN} ... {END} pair")
    return text[:start + len(BEGIN)] + "\n" + body + "\n" + text[end:]


def sources(results: Path, mode: str) -> list[Path]:
    """The manifest and every file the rendering reads."""
    records = valid_records(results, mode)
    return [manifest_path(results, mode), *(results / e["output"] for e in records.values())] if records else []


def main(argv: list[str] | None = None) -> int:
    """Entry point: rewrite, check, or list the sources."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--mode", choices=("full", "quick"), default="full", help="which suite run to render")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README is out of date")
    parser.add_argument("--sources", action="store_true", help="print the files the rendering reads")
    args = parser.parse_args(argv)
    results = args.results.resolve()
    if args.sources:
        print("\n".join(str(p) for p in sources(results, args.mode)))
        return 0
    text = args.readme.read_text(encoding="utf-8")
    new = replace_between_markers(text, render(results, args.mode))
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date: run python benchmarks/render_results.py", file=sys.stderr)
            return 1
        print(f"{args.readme} is up to date")
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{'rewrote' if new != text else 'unchanged:'} {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
