"""The suite's registry: each study of issue 15 and the existing benchmark scripts that make it.

A study is one or more steps; a step is one run of one script of ``benchmarks/`` with the
arguments of the full study or of its reduced (``--quick``) form. The suite gives every step
its own JSON file under the results folder: ``NAME.json`` (full) or ``NAME-quick.json``.
Studies without steps are listed as not built, with what they would measure.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = ("full", "quick")


@dataclass(frozen=True)
class Step:
    """One run of ``benchmarks/<script>.py``.

    Parameters
    ----------
    script : the script's name, without ``.py``.
    full, quick : its arguments in each mode; ``{results}`` and ``{suffix}`` (``""`` or
        ``"-quick"``) are filled in.
    out : how the script takes its JSON path: an option (``"--out"``), ``""`` for the first
        positional argument, or ``None`` when the script writes a fixed file (``fixed``).
    fixed : with ``out=None``, the file it writes in full and in quick mode, under ``RESULTS``.
    optional : exiting 0 without writing its file is not a failure (``gpu_check`` without a GPU).
    path : the script's file, when it is not ``benchmarks/<script>.py`` (tests).
    """

    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    out: str | None = "--out"
    fixed: tuple[str, str] = ("", "")
    optional: bool = False
    path: Path | None = None

    def script_path(self) -> Path:
        """The file that runs."""
        return self.path or HERE / f"{self.script}.py"

    def output(self, mode: str, results: Path) -> Path:
        """The JSON file this step writes in ``mode``."""
        if self.out is None:
            return RESULTS / self.fixed[MODES.index(mode)]
        return Path(results) / f"{self.script}{suffix(mode)}.json"

    def args(self, mode: str, results: Path) -> list[str]:
        """The script's arguments in ``mode``, its output path included."""
        raw = self.full if mode == "full" else self.quick
        args = [a.format(results=results, suffix=suffix(mode)) for a in raw]
        out = str(self.output(mode, results))
        if self.out == "":
            return [out, *args]
        return [*args, self.out, out] if self.out else args

    def argv(self, mode: str, results: Path) -> list[str]:
        """The whole command line."""
        return [sys.executable, str(self.script_path()), *self.args(mode, results)]


@dataclass(frozen=True)
class Study:
    """A named study: what it measures and its steps (none: not built yet)."""

    name: str
    measures: str
    steps: tuple[Step, ...] = field(default_factory=tuple)
    missing: str = ""

    @property
    def built(self) -> bool:
        """Whether the study has steps that run."""
        return bool(self.steps)


def suffix(mode: str) -> str:
    """``""`` for the full study, ``"-quick"`` for the reduced one."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    return "" if mode == "full" else "-quick"


STUDIES: tuple[Study, ...] = (
    Study("accuracy", "what personalisation is worth on the known-truth cohort: protocols x variants x seeds "
          "x confound, with the oracle references",
          (Step("personalisation", out=None, fixed=("personalisation.json", "personalisation_quick.json")),)),
    Study("federation", "simulation wall over `centralized` wall for the same example-steps, engine start-up apart; "
          "the training loop's clips/s in the run over the same model's isolated step",
          (Step("federation_overhead", full=("--work", "{results}/paired_runs"),
                quick=("--quick", "--work", "{results}/paired_runs-quick")),)),
    Study("communication", "bytes up and down per site per round, `mpdrm` and `fedavg_full`, against the "
          "shared parameters' size (one copy of MPDRM's shared arrays)",
          (Step("communication", full=("--work", "{results}/communication_runs"),
                quick=("--quick", "--work", "{results}/communication_runs-quick")),)),
    Study("privacy", "DP-SGD step cost over plain training, and patient-level DP accuracy (scratch and "
          "pretrained recipes) against no DP",
          (Step("dp_overhead", quick=("--sizes", "tiny", "--modes", "grouped", "--steps", "3", "--warmup", "1")),
           Step("dp_recipe", full=("--work", "{results}/dp_recipe_runs{suffix}"),
                quick=("--quick", "--work", "{results}/dp_recipe_runs{suffix}")))),
    Study("compute", "training FLOP/s against this machine's matmul FLOP/s, and ingestion real-time factor",
          (Step("model_cost", quick=("--sizes", "tiny", "--no-dp", "--threads", "1"), out=""),
           Step("ingest_speed", quick=("--quick", "--workers", "1")))),
    Study("scale", "8, 32 and 64 simulated sites: seconds per round and peak resident memory, and how each "
          "grows with the number of sites",
          (Step("scale", full=("--work", "{results}/scale_runs"),
                quick=("--quick", "--work", "{results}/scale_runs-quick")),)),
    Study("time_to_accuracy", "wall time until the federated run first reaches a stated RMSE, against "
          "centralized (the federation study's runs)",
          (Step("time_to_accuracy", full=("--work", "{results}/paired_runs"),
                quick=("--quick", "--work", "{results}/paired_runs-quick")),)),
    Study("robust", "one site sending x100 updates: final RMSE with and without `strategy.robust`",
          (Step("robust_influence", full=("--work", "{results}/robust_influence_runs"),
                quick=("--seeds", "0", "--rounds", "2", "--work", "{results}/robust_influence_runs-quick")),)),
    Study("dp_accuracy", "clip-level DP accuracy at epsilon 1, 4, 8 against no DP (before patient-level DP)",
          (Step("dp_accuracy", full=("--work", "{results}/dp_accuracy_runs"),
                quick=("--sites", "2", "--subjects", "4", "--rounds", "2", "--seeds", "0", "--epsilons", "8",
                       "--work", "{results}/dp_accuracy_runs-quick")),)),
    Study("allocator", "step time and page faults with and without keeping freed memory",
          (Step("allocator", quick=("--sizes", "tiny", "--repeats", "1", "--steps", "2")),)),
    Study("scoring", "seconds of video scored per wall second at a site (decode, face track, model)",
          (Step("scoring_speed", quick=("--sizes", "tiny", "--threads", "1", "--seconds", "4")),)),
    Study("startup", "a deployed site's start-up per Flower message (fresh ClientApp process to first step)",
          (Step("site_startup", quick=("--repeats", "1"), out=""),)),
    Study("gpu", "every model size, DP-SGD and a 2-site simulation on CUDA (skips without a GPU; "
          "--quick: the same checks on the CPU, reduced)",
          (Step("gpu_check", quick=("--device", "cpu", "--sizes", "tiny", "--steps", "1", "--image-size", "32",
                                    "--frames", "8", "--no-simulation"), optional=True),)),
)


def by_name(studies: tuple[Study, ...] = STUDIES) -> dict[str, Study]:
    """The studies keyed by name."""
    return {s.name: s for s in studies}
