"""What personalisation is worth, on a cohort whose truth is known: MPDRM against its ablations and
baselines under each evaluation protocol, with the oracle references on the scored visits.

Every cell is a real ``mpdrm-simulate`` run (Flower simulation, or the centralized baseline) on
the default synthetic cohort generated for that seed (the seed drives both the cohort and the
training), at the default run's scale (see :class:`Scale`). A cell takes a default run's time
(about 5 minutes on an idle 2-core AVX-512 machine), so the whole plan (about 80 cells) takes
about 7 hours; ``--variants``/``--protocols``/``--seeds-*`` choose a subset, and the tables
report every cell of the plan that has finished, whichever invocation ran it. A finished run
(its summary.json, with the same settings) is reused, so an interrupted study continues where it
stopped. Writes ``benchmarks/results/personalisation.json`` and
``personalisation.md`` (tables) and ``personalisation_confound.png``.

    python benchmarks/personalisation.py                 # the whole plan (about 7 hours on 2 cores)
    python benchmarks/personalisation.py --quick         # every part once, tiny (a few minutes)
    python benchmarks/personalisation.py --only headline # one part: headline | variants | confound

Parts:
- ``headline``: mpdrm, ``ablation=no_mpfn``, ``strategy=fedavg_full`` on protocols ``visits``,
  ``subjects`` and ``enrolled``, 5 seeds;
- ``variants``: ``no_rarm``, ``no_orthogonality``, ``local_only``, ``centralized`` and
  ``personal_offset`` (``model.personal_offset=true`` with the personality branch isolated and
  centred) on ``visits`` and ``subjects``, 3 seeds;
- ``confound``: mpdrm against no_mpfn on ``visits`` at habit strength 0, 0.5, 1, 2, 3 seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Hydra overrides of each compared variant.
VARIANTS: dict[str, list[str]] = {
    "mpdrm": [],
    "no_mpfn": ["ablation=no_mpfn"],
    "fedavg_full": ["strategy=fedavg_full"],
    "no_rarm": ["ablation=no_rarm"],
    "no_orthogonality": ["ablation=no_orthogonality"],
    "local_only": ["strategy=local_only"],
    "centralized": ["strategy=centralized"],
    # the offset reads p, so p must tell people apart: the branch isolated and centred
    "personal_offset": ["model.personal_offset=true", "model.isolate_personality=true",
                        "train.center_personality=true"],
}
#: Reference errors on each cell's scored visits (``mpdrm.data.cohorts.references_on``);
#: ``site_mean`` (each site's mean score on its unscored visits: a site-calibrated model that
#: learned nothing); ``person_memory`` (each person's mean score on their other visits) exists
#: only where the people are known (``visits``, ``enrolled``).
REFERENCES = ("oracle", "habit_blind", "constant", "site_mean", "person_memory")


@dataclass(frozen=True)
class Scale:
    """The cohort and schedule of every run of the study; ``None`` keeps the default run's value.

    The default is the default run itself (``mpdrm-simulate`` with no override: 3 sites, 8
    subjects x 3 visits of 8 s per site, 6 rounds x 2 local epochs, 64 px, 2 CPUs per client).
    A smaller scale tried first (4 s visits, 4 rounds x 1 epoch) ended at the constant predictor
    (seed 0, ``visits``: RMSE 0.303 against constant 0.308), so it could not compare anything.
    """

    sites: int | None = None
    subjects: int | None = None
    visits: int | None = None
    seconds: float | None = None
    rounds: int | None = None
    epochs: int | None = None
    image_size: int | None = None
    client_cpus: int | None = None
    max_clips: int | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)

    def overrides(self) -> list[str]:
        keys = {"sites": "sites", "subjects": "data.synth.subjects", "visits": "data.synth.visits",
                "seconds": "data.synth.seconds", "rounds": "rounds", "epochs": "train.epochs",
                "image_size": "model.image_size", "client_cpus": "resources.client_cpus",
                "max_clips": "prepare.max_clips"}
        chosen = [f"{key}={getattr(self, name)}" for name, key in keys.items() if getattr(self, name) is not None]
        return [*chosen, *self.extra]


QUICK = Scale(sites=2, subjects=3, visits=3, seconds=3.0, rounds=1, epochs=1, image_size=32, client_cpus=1,
              max_clips=2)


@dataclass(frozen=True)
class Cell:
    """One run: a variant, a protocol, a seed, a habit strength."""

    variant: str
    protocol: str
    seed: int
    confound: float = 0.6

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.protocol}-c{self.confound:g}-s{self.seed}"


def plan(part: str, seeds_headline: list[int], seeds_other: list[int], confounds: list[float]) -> list[Cell]:
    """The cells of one part of the study (``enrolled`` has its own training run: a run scores
    one protocol)."""
    if part == "headline":
        return [Cell(v, p, s) for v in ("mpdrm", "no_mpfn", "fedavg_full")
                for p in ("visits", "subjects", "enrolled") for s in seeds_headline]
    if part == "variants":
        return [Cell(v, p, s) for v in ("no_rarm", "no_orthogonality", "local_only", "centralized", "personal_offset")
                for p in ("visits", "subjects") for s in seeds_other]
    if part == "confound":
        return [Cell(v, "visits", s, c) for v in ("mpdrm", "no_mpfn") for c in confounds for s in seeds_other]
    raise ValueError(f"unknown part {part!r}")


def settings_of(cell: Cell, scale: Scale) -> str:
    return json.dumps({"cell": cell.__dict__, "scale": scale.__dict__}, sort_keys=True, default=list)


def finished(cell: Cell, scale: Scale, work: Path) -> dict[str, Any] | None:
    """The summary of a run that finished earlier with the same settings, else None."""
    run_dir = work / cell.name
    summary_file, settings_file = run_dir / "summary.json", run_dir / "study_settings.json"
    if summary_file.is_file() and settings_file.is_file() and settings_file.read_text() == settings_of(cell, scale):
        summary = json.loads(summary_file.read_text())
        if summary.get("final") and summary.get("reference"):
            return summary
    return None


def run_cell(cell: Cell, scale: Scale, work: Path, cache: Path) -> dict[str, Any]:
    """The summary of one run, reused when it finished earlier with the same settings."""
    summary = finished(cell, scale, work)
    if summary is not None:
        return summary
    run_dir = work / cell.name
    overrides = [*scale.overrides(), *VARIANTS[cell.variant], f"seed={cell.seed}", f"eval.protocol={cell.protocol}",
                 f"data.synth.confound={cell.confound}", f"run_dir={run_dir}"]
    env = {**os.environ, "FEDMPDRM_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "simulations.simulate", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {run_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (run_dir / "study_wall.json").write_text(json.dumps({"process_seconds": time.perf_counter() - started}))
    (run_dir / "study_settings.json").write_text(settings_of(cell, scale))
    return json.loads((run_dir / "summary.json").read_text())


def process_seconds(cell: Cell, work: Path) -> float | None:
    """Wall time of the whole ``mpdrm-simulate`` process of a cell (engine start-up included)."""
    wall = work / cell.name / "study_wall.json"
    return json.loads(wall.read_text()).get("process_seconds") if wall.is_file() else None


def references_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The references of a finished run recomputed from its cohort (which must still be there)."""
    from mpdrm.contract.runconfig import merged  # noqa: PLC0415 (the study's own imports stay light)
    from mpdrm.contract.site_data import evaluated_visits  # noqa: PLC0415
    from mpdrm.contract.sites import cohort_sites  # noqa: PLC0415
    from mpdrm.data.cohorts import oracle_reference  # noqa: PLC0415

    config = summary.get("config") or {}
    cohort = Path(str(config.get("cohort") or ""))
    if not (cohort / "oracle.json").is_file():
        return None
    return oracle_reference(cohort, evaluated_visits(cohort_sites(cohort), merged(config)))


def row(cell: Cell, summary: dict[str, Any], process: float | None = None) -> dict[str, Any]:
    """The figures of one run: final RMSE, the references on its scored visits, wall times
    (``wall_seconds``: the server's, from its start to the end; ``process_seconds``: the whole
    process, engine start-up and cohort preparation included)."""
    final = summary.get("final") or {}
    refs = summary.get("reference") or {}
    if refs and "site_mean" not in refs:
        refs = references_of(summary) or refs  # a run from before site_mean / person_memory existed
    return {**cell.__dict__, "rmse": final.get("rmse"), "ccc": final.get("ccc"),
            "subject_bias_rmse": final.get("subject_bias_rmse"), "within_subject_rmse": final.get("within_subject_rmse"),
            **{r: (refs.get(r) or {}).get("rmse") for r in REFERENCES},
            "round_rmse": [r["eval"].get("rmse") for r in summary.get("rounds", [])],
            "wall_seconds": summary.get("wall_seconds"), "process_seconds": process}


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(rows: list[dict[str, Any]], by: tuple[str, ...]) -> str:
    """A markdown table: mean ± sd over seeds of the model and the references, per group."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    head = [*by, "seeds", "model RMSE", *REFERENCES, "model bias", "model within"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, members in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        cells = [*map(str, key), str(len(members)), mean_sd([m["rmse"] for m in members]),
                 *(mean_sd([m[r] for m in members]) for r in REFERENCES),
                 *(mean_sd([m.get(k) for m in members]) for k in ("subject_bias_rmse", "within_subject_rmse"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confound(rows: list[dict[str, Any]], path: Path) -> None:
    """RMSE against habit strength per variant, with the oracle and habit-blind curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    confounds = sorted({r["confound"] for r in rows})
    series = {v: "model" for v in sorted({r["variant"] for r in rows})}
    for variant in series:
        ax.plot(confounds, [statistics.fmean([r["rmse"] for r in rows if r["variant"] == variant and r["confound"] == c])
                            for c in confounds], marker="o", label=variant)
    for ref, style in (("oracle", ":"), ("habit_blind", "--")):
        ax.plot(confounds, [statistics.fmean([r[ref] for r in rows if r["confound"] == c]) for c in confounds],
                linestyle=style, color="grey", label=ref)
    ax.set_xlabel("habit strength (confound)")
    ax.set_ylabel("RMSE (normalised), visits protocol")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from report import write_report  # noqa: PLC0415  (benchmarks/ is the script's folder)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every part once at a tiny scale")
    parser.add_argument("--only", choices=("headline", "variants", "confound"), nargs="*")
    parser.add_argument("--seeds-headline", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seeds-other", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--confounds", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), help="only these variants")
    parser.add_argument("--protocols", nargs="+", choices=("visits", "subjects", "enrolled"), help="only these protocols")
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides for every run")
    parser.add_argument("--work", type=Path, default=RESULTS / "personalisation_runs")
    args = parser.parse_args(argv)
    scale = Scale(extra=tuple(args.extra)) if not args.quick else Scale(**{**QUICK.__dict__, "extra": tuple(args.extra)})
    seeds_h, seeds_o = ([0], [0]) if args.quick else (args.seeds_headline, args.seeds_other)
    confounds = [0.0, 2.0] if args.quick else args.confounds
    work = args.work / ("quick" if args.quick else "full")
    started, rows = time.perf_counter(), {}
    for part in args.only or ("headline", "variants", "confound"):
        rows[part] = []
        for cell in plan(part, seeds_h, seeds_o, confounds):
            chosen = (not args.variants or cell.variant in args.variants) and (
                not args.protocols or cell.protocol in args.protocols)
            summary = run_cell(cell, scale, work, work / "cache") if chosen else finished(cell, scale, work)
            if summary is None:  # left out by --variants/--protocols and not run before: not reported
                continue
            rows[part].append(row(cell, summary, process_seconds(cell, work)))
            r = rows[part][-1]
            print(f"{part} {cell.name}: rmse {r['rmse']} (oracle {r['oracle']}, habit-blind {r['habit_blind']}, "
                  f"constant {r['constant']})", flush=True)
    tables = {"headline": ("variant", "protocol"), "variants": ("variant", "protocol"), "confound": ("variant", "confound")}
    text = "\n\n".join(f"### {part}\n\n{table(part_rows, tables[part])}" for part, part_rows in rows.items())
    print(text)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"personalisation{suffix}.md").write_text(text + "\n")
    if rows.get("confound"):
        plot_confound(rows["confound"], RESULTS / f"personalisation_confound{suffix}.png")
    write_report(RESULTS / f"personalisation{suffix}.json",
                 {"benchmark": "personalisation", "scale": scale.__dict__, "rows": rows,
                  "metrics_units": "normalised RMSE (score / scale maximum), video level, on each protocol's scored visits",
                  "wall_seconds": time.perf_counter() - started})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
