"""What personalisation is worth, on a cohort whose truth is known: MPDRM against its ablations and
baselines under each evaluation protocol, with the oracle references on the scored visits.

Every cell is a real ``mpdrm-simulate`` run (Flower simulation, or the centralized baseline) on
the default synthetic cohort generated for that seed (the seed drives both the cohort and the
training), at a reduced scale chosen so that the whole study fits in about three hours on two
cores. A finished run (its summary.json, with the same settings) is reused, so an interrupted
study continues where it stopped. Writes ``benchmarks/results/personalisation.json`` and
``personalisation.md`` (tables) and ``personalisation_confound.png``.

    python benchmarks/personalisation.py                 # the study (about 3 hours on 2 cores)
    python benchmarks/personalisation.py --quick         # every part once, tiny (a few minutes)
    python benchmarks/personalisation.py --only headline # one part: headline | variants | confound

Parts:
- ``headline``: mpdrm, ``ablation=no_mpfn``, ``strategy=fedavg_full`` on protocols ``visits``,
  ``subjects`` and ``enrolled``, 5 seeds;
- ``variants``: ``no_rarm``, ``no_orthogonality``, ``local_only``, ``centralized`` on ``visits``
  and ``subjects``, 3 seeds;
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

from report import write_report  # benchmarks/ is on sys.path when run as a script

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
}
REFERENCES = ("oracle", "habit_blind", "constant")


@dataclass(frozen=True)
class Scale:
    """The cohort and schedule of every run of the study."""

    sites: int = 3
    subjects: int = 8
    visits: int = 3
    seconds: float = 4.0
    rounds: int = 4
    epochs: int = 1
    image_size: int = 64
    max_clips: int | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)

    def overrides(self) -> list[str]:
        out = [f"sites={self.sites}", f"data.synth.subjects={self.subjects}", f"data.synth.visits={self.visits}",
               f"data.synth.seconds={self.seconds}", f"rounds={self.rounds}", f"train.epochs={self.epochs}",
               f"model.image_size={self.image_size}", "resources.client_cpus=1", *self.extra]
        return out + ([f"prepare.max_clips={self.max_clips}"] if self.max_clips else [])


QUICK = Scale(sites=2, subjects=3, visits=3, seconds=3.0, rounds=1, epochs=1, image_size=32, max_clips=2)


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
    """The cells of one part of the study."""
    if part == "headline":
        return [Cell(v, p, s) for v in ("mpdrm", "no_mpfn", "fedavg_full")
                for p in ("visits", "subjects", "enrolled") for s in seeds_headline]
    if part == "variants":
        return [Cell(v, p, s) for v in ("no_rarm", "no_orthogonality", "local_only", "centralized")
                for p in ("visits", "subjects") for s in seeds_other]
    if part == "confound":
        return [Cell(v, "visits", s, c) for v in ("mpdrm", "no_mpfn") for c in confounds for s in seeds_other]
    raise ValueError(f"unknown part {part!r}")


def run_cell(cell: Cell, scale: Scale, work: Path, cache: Path) -> dict[str, Any]:
    """The summary of one run, reused when it finished earlier with the same settings."""
    run_dir = work / cell.name
    settings = json.dumps({"cell": cell.__dict__, "scale": scale.__dict__}, sort_keys=True, default=list)
    summary_file, settings_file = run_dir / "summary.json", run_dir / "study_settings.json"
    if summary_file.is_file() and settings_file.is_file() and settings_file.read_text() == settings:
        summary = json.loads(summary_file.read_text())
        if summary.get("final") and summary.get("reference"):
            return summary
    overrides = [*scale.overrides(), *VARIANTS[cell.variant], f"seed={cell.seed}", f"eval.protocol={cell.protocol}",
                 f"data.synth.confound={cell.confound}", f"run_dir={run_dir}"]
    env = {**os.environ, "FEDMPDRM_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "simulations.simulate", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {run_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    settings_file.write_text(settings)
    return json.loads(summary_file.read_text())


def row(cell: Cell, summary: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run: final RMSE, the references on its scored visits, wall time."""
    final = summary.get("final") or {}
    refs = summary.get("reference") or {}
    return {**cell.__dict__, "rmse": final.get("rmse"), "ccc": final.get("ccc"),
            **{r: (refs.get(r) or {}).get("rmse") for r in REFERENCES},
            "round_rmse": [r["eval"].get("rmse") for r in summary.get("rounds", [])],
            "wall_seconds": summary.get("wall_seconds")}


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
    head = [*by, "seeds", "model RMSE", *REFERENCES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, members in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        cells = [*map(str, key), str(len(members)), mean_sd([m["rmse"] for m in members]),
                 *(mean_sd([m[r] for m in members]) for r in REFERENCES)]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every part once at a tiny scale")
    parser.add_argument("--only", choices=("headline", "variants", "confound"), nargs="*")
    parser.add_argument("--seeds-headline", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seeds-other", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--confounds", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
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
            rows[part].append(row(cell, run_cell(cell, scale, work, work / "cache")))
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
