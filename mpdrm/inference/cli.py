"""Command lines: ``mpdrm-predict``, ``mpdrm-enroll``, ``mpdrm-export`` (thin argparse wrappers)."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .model import ScoringError, VideoScore, load_model_dir
from .modeldir import ModelDirError

COLUMNS = ("video", "score", "normalised", "low", "high", "clips", "face_rate", "personality", "warnings", "error")


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_rows(rows: Sequence[VideoScore], score_max: float, out: Any = None) -> None:
    """One line per video: score on the scale (0..score_max) and normalised, p10-p90 of the clips, clips,
    face-found ratio, personality source, warnings or the error."""
    out = out or sys.stdout
    for r in rows:
        if not r.ok:
            print(f"{r.video}\tERROR\t{r.error}", file=out)
            continue
        spread = f"{_fmt(r.low)} to {_fmt(r.high)}"
        face = "n/a" if r.face_rate is None else f"{r.face_rate:.0%}"
        print(f"{r.video}\tscore {_fmt(r.score)}/{score_max:g}\tnorm {_fmt(r.normalised)}\tclips p10-p90 {spread}"
              f"\tclips {r.clips}\tface {face}\tpersonality: {r.personality}"
              + (f"\twarnings: {'; '.join(r.warnings)}" if r.warnings else ""), file=out)


def write_rows(rows: Sequence[VideoScore], json_out: str | None, csv_out: str | None) -> None:
    """``--json OUT`` (a list of rows) or ``--csv OUT`` (the columns of :data:`COLUMNS`)."""
    if json_out:
        Path(json_out).write_text(json.dumps([r.row() for r in rows], indent=2) + "\n")
    if csv_out:
        with Path(csv_out).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r.row() for r in rows)


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``mpdrm-predict MODEL_DIR VIDEO... [--subject ID] [--json OUT | --csv OUT]``; 0 if one video was scored."""
    ap = argparse.ArgumentParser(prog="mpdrm-predict", description="Score visits with a site's trained model.")
    ap.add_argument("model_dir", help="the site's model directory (STATE_DIR/model, or from mpdrm-export)")
    ap.add_argument("videos", nargs="+", help="video files")
    ap.add_argument("--subject", help="an enrolled patient or a training subject: use that person's reference")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    out.add_argument("--csv", metavar="OUT", help="also write the rows as CSV")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    _threads(args.threads)
    try:
        model = load_model_dir(args.model_dir)
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"mpdrm-predict: {error}", file=sys.stderr)
        return 2
    rows = model.score_videos(args.videos, args.subject, progress=not args.no_progress)
    print_rows(rows, model.score_max)
    write_rows(rows, args.json, args.csv)
    for r in rows:
        if not r.ok:
            print(f"mpdrm-predict: {r.error}", file=sys.stderr)
    return 0 if any(r.ok for r in rows) else 1


def enroll_main(argv: Sequence[str] | None = None) -> int:
    """``mpdrm-enroll MODEL_DIR --subject ID VIDEO [--score S]``: set the patient's personality reference."""
    ap = argparse.ArgumentParser(prog="mpdrm-enroll", description="Enrol a patient from a baseline visit "
                                 "(the reference stays in MODEL_DIR; nothing is sent anywhere).")
    ap.add_argument("model_dir")
    ap.add_argument("video")
    ap.add_argument("--subject", required=True, help="the patient's id at the site")
    ap.add_argument("--score", type=float, default=None, help="the visit's known score (recorded and compared)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    _threads(args.threads)
    try:
        model = load_model_dir(args.model_dir)
        record = model.enroll(args.subject, args.video, score=args.score)
    except (ModelDirError, ScoringError, ValueError) as error:
        print(f"mpdrm-enroll: {error}", file=sys.stderr)
        return 1
    known = "" if record["score"] is None else f", given {record['score']:g}"
    print(f"enrolled {args.subject} from {args.video}: {record['num_clips']} clips, "
          f"baseline scored {record['predicted']:.3f}{known}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """``mpdrm-export RUN_DIR --state-dir STATE --site-dir SITE [--out MODEL_DIR] [--run-id N]``."""
    from .export import ExportError, export_from_run

    ap = argparse.ArgumentParser(prog="mpdrm-export", description="Build a site's model directory from the "
                                 "coordinator's checkpoint and the site's state.")
    ap.add_argument("run_dir", help="the run folder (checkpoint and summary.json)")
    ap.add_argument("--state-dir", required=True, help="the site's STATE_DIR")
    ap.add_argument("--site-dir", required=True, help="the site folder, prepared with the run's settings")
    ap.add_argument("--out", default=None, help="default: STATE_DIR/model")
    ap.add_argument("--run-id", type=int, default=None, help="Flower run id to record")
    args = ap.parse_args(argv)
    try:
        out = export_from_run(Path(args.run_dir), Path(args.state_dir), Path(args.site_dir),
                              Path(args.out) if args.out else None, run_id=args.run_id)
    except (ExportError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"mpdrm-export: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


__all__ = ["enroll_main", "export_main", "predict_main", "print_rows", "write_rows"]
