"""``mpdrm-simulate``: the main job. A Hydra app that runs every site of a cohort on this
machine through Flower's simulation engine and writes a run folder.

    mpdrm-simulate                                   # default synthetic cohort, MPDRM
    mpdrm-simulate sites=4 rounds=10 model=base strategy=fedavg_full
    mpdrm-simulate strategy=centralized              # pooled-data baseline
    mpdrm-simulate ablation=no_mpfn                  # an MPDRM ablation
    mpdrm-simulate cohort=/data/my-cohort            # an existing cohort folder

The run folder (``runs/<time>-<mode>/`` unless ``run_dir=`` is given) holds
``summary.json``, ``plots/*.png``, ``config.yaml`` (the resolved config),
``run_config.json`` (what the Flower apps read), ``checkpoint.safetensors`` and the sites'
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
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mpdrm.contract.runconfig import check_choices, merged, run_prepare_config, to_flat
from mpdrm.contract.site_data import evaluated_visits
from mpdrm.contract.schema import RunSchema
from mpdrm.contract.sites import cohort_sites
from server.summary import SUMMARY_FILE, write_summary

from .cohort import ensure_synthetic_cohort, oracle_reference, prepare_cohort, score_max_of
from .engine import QUIET_ENV
from .overrides import check_overrides
from .processes import honour_sigint, new_token, run_isolated
from .report import final_table

#: Name of the typed schema in Hydra's ConfigStore (first entry of conf/config.yaml's defaults).
SCHEMA_NAME = "mpdrm_run"
ConfigStore.instance().store(name=SCHEMA_NAME, node=RunSchema)


def build_run_config(cfg: DictConfig, cohort: Path, run_dir: Path, num_sites: int) -> dict[str, Any]:
    """The flat Flower run config both apps read, from the composed schema.

    Fills what only the harness knows: the cohort, the run and state folders, ``min-sites``
    (every site unless set) and the cohort's score scale (unless set).
    """
    run: RunSchema = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    run.cohort, run.run_dir, run.state_root = str(cohort), str(run_dir), str(run_dir / "site-state")
    run.min_sites = num_sites if run.min_sites is None else run.min_sites
    if run.data.score_max is None:
        run.data.score_max = score_max_of(cohort)
    return to_flat(run)


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
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    started = time.perf_counter()
    run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cohort = resolve_cohort(cfg)
    num_sites = len(cohort_sites(cohort))
    run_config = build_run_config(cfg, cohort, run_dir, num_sites)
    try:
        check_choices(run_config)
    except ValueError as error:
        raise SystemExit(f"mpdrm-simulate: {error}") from None
    prepare_cohort(cohort, run_prepare_config(run_config), int(cfg.data.prepare_workers),
                   score_max=float(run_config["data.score_max"]))

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
    engine_started = time.perf_counter()
    status = run_isolated(["-m", "simulations.engine", str(spec_path)], dict(os.environ), new_token())
    engine_seconds = time.perf_counter() - engine_started
    if status != 0:
        raise SystemExit(status if status == 130 else f"[fedmpdrm] the simulation failed (exit status {status}); run folder: {run_dir}")
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    reference = oracle_reference(cohort, evaluated_visits(cohort_sites(cohort), merged(run_config)))
    if reference:
        summary["reference"] = reference
        summary["reference_on"] = {"protocol": run_config["eval.protocol"], "visits": "the evaluated ones"}
    summary["engine_seconds"] = engine_seconds
    summary["process_seconds"] = time.perf_counter() - started
    write_summary(run_dir, summary)
    print(final_table(summary), flush=True)
    print(f"[fedmpdrm] done in {time.perf_counter() - started:.0f} s: {run_dir / SUMMARY_FILE}", flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    simulate(cfg)


def main() -> None:
    """Console entry point (``mpdrm-simulate``).

    From here on, Ctrl-C (SIGINT, also one inherited ignored, as in a script's background
    job) ends it with status 130 and no process of the run left.
    """
    honour_sigint()
    problem = check_overrides(sys.argv[1:])
    if problem:
        raise SystemExit(f"mpdrm-simulate: {problem}")
    try:
        _hydra_main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
