"""``mpdrm-simulate``: the main job. A Hydra app that runs every site of a cohort on this
machine through Flower's simulation engine and writes a run folder.

    mpdrm-simulate                                   # default synthetic cohort, MPDRM
    mpdrm-simulate sites=4 rounds=10 model=base strategy=fedavg_full
    mpdrm-simulate strategy=centralized              # pooled-data baseline
    mpdrm-simulate ablation=no_mpfn                  # an MPDRM ablation
    mpdrm-simulate cohort=/data/my-cohort            # an existing cohort folder

The run folder (``runs/<time>-<mode>/`` unless ``run_dir=`` is given) holds
``summary.json``, ``plots/*.png``, ``config.yaml`` (the resolved config),
``run_config.json`` (what the Flower apps read), ``checkpoint.pt`` and the sites'
private state (``site-state/``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from client.runconfig import flatten
from server.summary import SUMMARY_FILE, write_summary

from .cohort import ensure_synthetic_cohort, oracle_reference, prepare_cohort, score_max_of
from .engine import QUIET_ENV
from .processes import new_token, run_isolated
from .report import final_table


def build_run_config(cfg: DictConfig, cohort: Path, run_dir: Path, num_sites: int) -> dict[str, Any]:
    """The flat Flower run config both apps read (same keys as ``[tool.flwr.app.config]``)."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data, strategy = c["data"], c["strategy"]
    run = {
        "num-server-rounds": int(c["rounds"]),
        "seed": int(c["seed"]),
        "mode": str(strategy["mode"]),
        "cohort": str(cohort),
        "state-root": str(run_dir / "site-state"),
        "run-dir": str(run_dir),
        "resume": bool(c["resume"]),
        "fraction-train": float(strategy["fraction_train"]),
        "fraction-evaluate": float(strategy["fraction_evaluate"]),
        "min-sites": num_sites,
        "strategy.aggregation": str(strategy["aggregation"]),
        "data.test_fraction": float(data["test_fraction"]),
        "data.task": str(data["task"]),
        "data.score_max": float(data["score_max"] or score_max_of(cohort)),
        "data.batch_size": int(data["batch_size"]),
        "data.eval_batch_size": int(data["eval_batch_size"]),
        "data.pk_p": int(data["pk_p"]),
        "data.pk_k": int(data["pk_k"]),
        "data.workers": int(data["workers"]),
    }
    run.update(flatten(strategy.get("options") or {}, "strategy.options."))
    run.update(flatten(c["model"], "model."))
    run.update(flatten(data["prepare"], "prepare."))
    run.update(flatten(c["train"], "train."))
    run.update(flatten(c["eval"], "eval."))
    run.update(flatten(c["dp"], "dp."))
    return run


def resolve_cohort(cfg: DictConfig) -> Path:
    """The cohort folder: ``cohort=`` or the cached default synthetic cohort."""
    if cfg.cohort:
        path = Path(str(cfg.cohort)).expanduser().resolve()
        if not path.is_dir():
            raise SystemExit(f"cohort={path}: no such folder")
        return path
    params = {"sites": int(cfg.sites), "seed": int(cfg.seed), **OmegaConf.to_container(cfg.data.synth, resolve=True)}  # type: ignore[dict-item]
    return ensure_synthetic_cohort(Path(str(cfg.cache_dir)), params, workers=int(cfg.data.prepare_workers))


def simulate(cfg: DictConfig) -> dict[str, Any]:
    """Prepare the cohort, run the simulation in an isolated child process, report."""
    from mpdrm.data.prepare import PrepareConfig

    from client.runconfig import build
    from client.site import cohort_sites

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    started = time.perf_counter()
    run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cohort = resolve_cohort(cfg)
    num_sites = len(cohort_sites(cohort))
    run_config = build_run_config(cfg, cohort, run_dir, num_sites)
    prepare_cohort(cohort, build(PrepareConfig, run_config, "prepare"), int(cfg.data.prepare_workers))

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    spec = {
        "run_config": run_config,
        "num_sites": num_sites,
        "resources": OmegaConf.to_container(cfg.resources, resolve=True),
        "audit_dir": str(run_dir / "outbound") if cfg.audit else "",
    }
    spec_path = run_dir / "simulation_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    print(f"[fedmpdrm] {run_config['mode']}: {num_sites} sites of {cohort}, {cfg.rounds} rounds -> {run_dir}", flush=True)
    status = run_isolated(["-m", "simulations.engine", str(spec_path)], dict(os.environ), new_token())
    if status != 0:
        raise SystemExit(status if status == 130 else f"[fedmpdrm] the simulation failed (exit status {status}); run folder: {run_dir}")
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    reference = oracle_reference(cohort)
    if reference:
        summary["reference"] = reference
        write_summary(run_dir, summary)
    print(final_table(summary), flush=True)
    print(f"[fedmpdrm] done in {time.perf_counter() - started:.0f} s: {run_dir / SUMMARY_FILE}", flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    simulate(cfg)


def main() -> None:
    """Console entry point (``mpdrm-simulate``)."""
    try:
        _hydra_main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
