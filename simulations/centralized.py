"""The ``centralized`` baseline: every site's training data pooled in one process.

No Flower: one model (prototypes for all training subjects of all sites) trains for
``rounds`` x ``train.epochs`` epochs; after each "round" it is evaluated on each
site's held-out subjects exactly as the federated clients evaluate, and the same
``summary.json`` (zero bytes) and plots are written.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from mpdrm.contract.runconfig import build, merged
from mpdrm.contract.initial import INIT_FILE, save_initial_weights
from mpdrm.contract.sharing import build_site_model, outbound_state, shared_names
from mpdrm.contract.site_data import calibration_offset, eval_loader, personality_source, site_data, train_loader
from mpdrm.contract.sites import cohort_sites, derive_seed
from mpdrm.persistence import seed_all
from mpdrm.training import TrainConfig, center_personality, evaluate, train_local
from server.plots import write_plots
from server.progress import progress_line
from server.summary import add_round, new_summary, write_summary
from strategies.metrics import weighted_average


class SubjectOffset(Dataset):
    """A site's training set with subject indices shifted into the pooled range."""

    def __init__(self, dataset: Dataset, offset: int) -> None:
        self.dataset = dataset
        self.offset = offset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["subject"] = item["subject"] + self.offset
        return item

    @property
    def subjects(self) -> list[int]:
        """Subject index of every item (used by the P x K sampler)."""
        base = getattr(self.dataset, "subjects", None)
        if base is None:
            base = [int(self.dataset[i]["subject"]) for i in range(len(self))]
        return [int(s) + self.offset for s in base]

    @property
    def visits(self) -> list[int]:
        """Visit of every item (the P x K sampler prefers positives from other visits)."""
        base = getattr(self.dataset, "visits", None)
        if base is None:
            base = [int(self.dataset[i]["visit"]) for i in range(len(self))]
        return [int(v) for v in base]


class Pooled(ConcatDataset):
    """Concatenation that exposes the pooled ``subjects`` list."""

    @property
    def subjects(self) -> list[int]:
        return [s for d in self.datasets for s in d.subjects]  # type: ignore[attr-defined]

    @property
    def visits(self) -> list[int]:
        return [v for d in self.datasets for v in d.visits]  # type: ignore[attr-defined]


def _evaluate_sites(model: torch.nn.Module, sites: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    per_site: dict[str, dict[str, Any]] = {}
    for name, data in sites.items():
        offset = calibration_offset(model, data, cfg)  # each site's own, as a federated site does
        metrics = evaluate(model, eval_loader(data.test, cfg), task=str(cfg["data.task"]),
                           offset=offset or 0.0, **personality_source(data, cfg))
        per_site[name] = {**{k: float(v) for k, v in metrics.items()}, "num-examples": len(data.test),
                          **({"calibration_offset": offset} if offset is not None else {})}
    overall = dict(weighted_average(per_site))
    return {**overall, "per_site": per_site}


def run_centralized(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Train on the pooled data; write ``summary.json`` and plots into ``run-dir``."""
    start = time.perf_counter()
    cfg = merged(run_config)
    run_dir = Path(str(cfg["run-dir"]))
    seed, rounds = int(cfg["seed"]), int(cfg["num-server-rounds"])
    folders = cohort_sites(Path(str(cfg["cohort"])))
    sites = {p.name: site_data(p, cfg) for p in folders}
    offsets, total = {}, 0
    for name, data in sites.items():
        offsets[name], total = total, total + int(data.num_subjects)
    pooled = Pooled([SubjectOffset(d.train, offsets[n]) for n, d in sites.items()])

    seed_all(derive_seed(seed, "centralized"))
    model = build_site_model(cfg, total)
    shared = shared_names(model, "mpdrm")
    summary = new_summary(cfg, shared, [k for k in model.state_dict() if k not in set(shared)], "centralized",
                          {str(i): p.name for i, p in enumerate(folders)})
    summary["initial"] = {"eval": _evaluate_sites(model, sites, cfg), "bytes_down": 0,
                          "wall_seconds": time.perf_counter() - start}
    print(progress_line(0, rounds, summary["initial"]), flush=True)
    tcfg = build(TrainConfig, cfg, "train")
    if tcfg.center_personality:
        center_personality(model, train_loader(pooled, cfg, seed=derive_seed(seed, "centralized", 0)))
    optimizer_state = None
    for server_round in range(1, rounds + 1):
        loader = train_loader(pooled, cfg, seed=derive_seed(seed, "centralized", server_round))
        tcfg.seed = derive_seed(seed, "centralized", server_round) % 2**31
        result = train_local(model, loader, tcfg, optimizer_state=optimizer_state)
        optimizer_state = result.optimizer_state
        train = {(k if k.startswith("train-") else f"train-{k}"): float(v) for k, v in result.metrics.items()}
        train["num-examples"] = int(result.num_examples)
        entry = {"round": server_round, "bytes_up": 0, "bytes_down": 0, "train": {**train, "per_site": {}},
                 "eval": _evaluate_sites(model, sites, cfg), "rejected": [],
                 "wall_seconds": time.perf_counter() - start}
        add_round(summary, entry)
        summary["wall_seconds"] = entry["wall_seconds"]
        write_summary(run_dir, summary)
        print(progress_line(server_round, rounds, entry), flush=True)
    summary["wall_seconds"] = time.perf_counter() - start
    summary["init_file"] = str(write_shared_weights(model, shared, cfg, run_dir))
    write_summary(run_dir, summary)
    write_plots(summary, run_dir / "plots")
    return summary


def write_shared_weights(model: torch.nn.Module, shared: list[str], cfg: Mapping[str, Any], run_dir: Path) -> Path:
    """``<run_dir>/shared.safetensors``: the trained shared branches, a federated run's ``init``.

    Pretraining on a cohort that no site owns (e.g. a synthetic one from another seed) and then
    fine-tuning under DP from this file is the recommended DP recipe.
    """
    source = {"strategy": "centralized", "cohort": str(cfg["cohort"]), "seed": int(cfg["seed"]),
              "rounds": int(cfg["num-server-rounds"]), "model.size": str(cfg["model.size"])}
    path = save_initial_weights(run_dir / INIT_FILE, outbound_state(model, shared), source)
    print(f"[fedmpdrm] shared weights for init=: {path}", flush=True)
    return path
