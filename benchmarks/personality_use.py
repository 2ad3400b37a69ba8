"""Does a trained site model's score depend on the personality embedding p at all?

For every site of a finished run (``mpdrm-simulate``; its ``run_config.json`` names the site
state and the cohort) whose model has a personality branch, and every video of the
site's *training* subjects (the subjects the site holds a reference for), the video's score
(mean of its clips' predictions) is computed with each training subject's reference p in turn,
with the subject's own reference and with each clip's own p. Reported per site:

- ``reference_cosine_mean`` / ``_min``: pairwise cosine similarity of the subjects' references
  (close to 1 for every pair: the branch maps every person to the same point);
- ``score_sd_over_references``: the spread of one video's score when only p changes (mean over
  videos), beside ``score_sd_over_videos`` (the spread between the videos with their own p):
  the first small against the second means the prediction ignores who the person is;
- ``mean_abs_own_reference_minus_clip_p``: what replacing the clip's own p by the subject's
  reference changes;
- ``rmse_own_reference`` / ``rmse_clip_p``: error on those videos (normalised score).

    python benchmarks/personality_use.py RUN_DIR [--out FILE]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

if not __package__:  # run as a script: the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpdrm.inference.model import SiteModel, load_model_dir  # noqa: E402


def reference_cosines(model: SiteModel) -> np.ndarray:
    """Pairwise cosine similarity of the site's training references, off the diagonal."""
    refs = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in model.training.values()])
    refs = torch.nn.functional.normalize(refs, dim=-1)
    cos = (refs @ refs.T).numpy()
    return cos[~np.eye(len(cos), dtype=bool)]


def video_scores(model: SiteModel, clips: np.ndarray) -> tuple[dict[str, float], float]:
    """The video's normalised score with each training subject's reference, and with the clips' own p."""
    by_reference = {s: float(np.mean(model.score_clips(clips, subject=s).prediction)) for s in model.training}
    return by_reference, float(np.mean(model.score_clips(clips).prediction))


def site_videos(model: SiteModel, site_folder: Path) -> Iterator[tuple[dict[str, str], np.ndarray]]:
    """``(manifest row, clips)`` of every video of a site folder, in manifest order, decoded as
    the model was trained."""
    with open(site_folder / "manifest.csv", newline="") as handle:
        for entry in csv.DictReader(handle):
            yield entry, model.clips_of(site_folder / entry["video"])[0]


def site_report(model: SiteModel, site_folder: Path) -> dict[str, Any]:
    """The figures of one site over its training subjects' videos (manifest order)."""
    spread, own, clip_p, targets = [], [], [], []
    for entry, clips in site_videos(model, site_folder):
        if entry["subject"] not in model.training:
            continue
        by_reference, with_clip_p = video_scores(model, clips)
        spread.append(float(np.std(list(by_reference.values()))))
        own.append(by_reference[entry["subject"]])
        clip_p.append(with_clip_p)
        targets.append(float(entry["score"]) / model.score_max)
    own_a, clip_a, target_a = np.array(own), np.array(clip_p), np.array(targets)
    cos = reference_cosines(model)
    return {"videos": len(own), "subjects": len(model.training),
            "reference_cosine_mean": float(cos.mean()), "reference_cosine_min": float(cos.min()),
            "score_sd_over_references": float(np.mean(spread)), "score_sd_over_videos": float(own_a.std()),
            "mean_abs_own_reference_minus_clip_p": float(np.abs(own_a - clip_a).mean()),
            "rmse_own_reference": float(np.sqrt(np.mean((own_a - target_a) ** 2))),
            "rmse_clip_p": float(np.sqrt(np.mean((clip_a - target_a) ** 2)))}


def run_report(state_root: Path, cohort: Path) -> dict[str, Any]:
    """Every site under ``state_root`` (``<site>/model``) with its cohort folder ``cohort/<site>``."""
    sites: dict[str, Any] = {}
    for state in sorted(p for p in state_root.iterdir() if (p / "model").is_dir()):
        model = load_model_dir(state / "model")
        if model.has_personality and model.training:
            sites[state.name] = site_report(model, cohort / state.name)
    if not sites:
        raise SystemExit(f"{state_root}: no site model with a personality branch and training references")
    return {"state_root": str(state_root), "cohort": str(cohort), "sites": sites}


def run_locations(run_dir: Path) -> tuple[Path, Path]:
    """``(state_root, cohort)`` of a finished run, from its ``run_config.json``."""
    config = json.loads((run_dir / "run_config.json").read_text())
    return Path(config["state-root"]), Path(config["cohort"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"run": str(args.run_dir), **run_report(*run_locations(args.run_dir))}
    for site, figures in report["sites"].items():
        print(site, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
