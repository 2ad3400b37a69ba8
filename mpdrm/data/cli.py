"""``mpdrm-data``: synth / check / prepare / avec.

Exit status: 0 success; 1 ``check`` found problems, or ``prepare`` has nothing usable left
at some site; 2 usage errors. ``check`` and ``prepare`` accept a site folder, or a cohort
folder (one with ``cohort.json``), in which case they work on every site in it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .manifest import MANIFEST_NAME, ManifestError


def _sites(path: Path) -> list[Path]:
    """A site folder -> [it]; a cohort folder (cohort.json, no manifest) -> its sites."""
    if not (path / MANIFEST_NAME).exists() and (path / "cohort.json").is_file():
        try:
            names = json.loads((path / "cohort.json").read_text())["sites"]
            return [path / n for n in names]
        except (ValueError, KeyError, OSError):
            pass
    return [path]


def format_problem(site: Path, p) -> str:
    """``SITE/manifest.csv:LINE: what`` (LINE left out for whole-file problems)."""
    where = str(site / p.file) if p.file else str(site)
    if p.line is not None:
        where += f":{p.line}"
    return f"{where}: {p.message}"


def _prepare_cfg(args):
    from .prepare import PrepareConfig
    kw = {}
    for name in ("frames", "stride", "hop", "size", "fps", "detector", "margin", "detect_every",
                 "fill", "start_seconds", "max_clips", "min_face_rate"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if getattr(args, "rgb", False):
        kw["grayscale"] = False
    return PrepareConfig(**kw)


def _add_prep_args(p: argparse.ArgumentParser, full: bool = True) -> None:
    p.add_argument("--detector", choices=("auto", "haar", "none"),
                   help="face detector (default auto: none for sites of face crops, e.g. "
                        "the synthetic cohort, else haar)")
    p.add_argument("--fps", type=float, help="resample to this frame rate (default 15)")
    p.add_argument("--frames", type=int, help="frames per clip, T (default 16)")
    p.add_argument("--stride", type=int, help="temporal stride inside a clip (default 2)")
    if full:
        p.add_argument("--hop", type=int, help="frames between clip windows (default 8)")
        p.add_argument("--size", type=int, help="crop side in pixels (default 64)")
        p.add_argument("--rgb", action="store_true", help="3-channel RGB instead of grayscale")
        p.add_argument("--margin", type=float, help="crop margin around the face (0.25)")
        p.add_argument("--detect-every", type=int, help="run Haar on every n-th frame (4)")
        p.add_argument("--fill", choices=("linear", "carry"),
                       help="face box between detections: interpolate (linear, default) or "
                            "keep the last one (carry)")
        p.add_argument("--start-seconds", type=float,
                       help="several faces in a video's first search: search whole frames this "
                            "long and start on the live one (1.0; 0: the largest at once)")
        p.add_argument("--max-clips", type=int, help="at most this many clips per video")
        p.add_argument("--min-face-rate", type=float,
                       help="skip videos with a face in fewer frames than this (0.1)")


def cmd_synth(args) -> int:
    from .synth import generate_cohort
    t0 = time.perf_counter()
    out = generate_cohort(args.out_dir, sites=args.sites, subjects=args.subjects,
                          visits=args.visits, seconds=args.seconds, seed=args.seed,
                          confound=args.confound, rater_sd=args.rater_sd, workers=args.workers,
                          reuse=not args.no_reuse, progress=not args.quiet)
    meta = json.loads((out / "cohort.json").read_text())
    o = meta["oracle"]
    print(f"cohort {out}: {args.sites} sites x {args.subjects} subjects x {args.visits} visits "
          f"= {len(meta['videos'])} videos, {meta['frames_total']} frames, "
          f"{time.perf_counter() - t0:.1f} s; oracle RMSE {o['rmse']:.2f} "
          f"({o['rmse_normalised']:.3f} of {meta['score_max']}), MAE {o['mae']:.2f}")
    return 0


def cmd_check(args) -> int:
    from .check import check_site
    cfg = _prepare_cfg(args)
    faces = {"auto": None, "yes": True, "no": False}[args.faces]
    status = 0
    for site in _sites(Path(args.site_dir)):
        res = check_site(site, score_max=args.score_max, cfg=cfg, faces=faces)
        for p in res.problems:
            print(format_problem(site, p))
        if res.ok:
            print(res.summary_line())
        else:
            n = len(res.problems)
            print(f"{site.name}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
            status = 1
    return status


def cmd_prepare(args) -> int:
    from .prepare import prepare_site
    cfg = _prepare_cfg(args)
    status = 0
    for site in _sites(Path(args.site_dir)):
        try:
            res = prepare_site(site, cfg, workers=args.workers, progress=not args.quiet,
                               reuse=not args.no_cache, score_max=args.score_max)
        except ManifestError as e:
            print(format_problem(site, e.problem))
            print(f"{site.name}: nothing usable", file=sys.stderr)
            status = 1
            continue
        for e in res.skipped:
            print(f"{site}/{MANIFEST_NAME}:{e['line']}: {e['video']}: skipped: {e['reason']}")
        print(res.summary() + f"; report {res.report_path}")
        if not res.ok:
            print(f"{site.name}: nothing usable", file=sys.stderr)
            status = 1
    return status


def cmd_avec(args) -> int:
    from .avec import convert_avec
    res = convert_avec(args.root, args.out_dir, mode=args.mode,
                       split_from_partition=args.split_from_partition)
    for v in res.unlabelled:
        print(f"{v}: no label file for this recording; left out")
    for lab in res.orphan_labels:
        print(f"{lab}: label without a video; left out")
    for c in res.conflicts:
        print(f"conflicting labels {c}; left out")
    print(f"site {res.site_dir}: {res.videos} videos of {res.subjects} subjects "
          f"(BDI-II, score_max 63)")
    return 0 if res.videos else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mpdrm-data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    from .synth import DEFAULTS
    p = sub.add_parser("synth", help="write a synthetic longitudinal cohort")
    p.add_argument("out_dir")
    p.add_argument("--sites", type=int, default=DEFAULTS["sites"])
    p.add_argument("--subjects", type=int, default=DEFAULTS["subjects"], help="per site")
    p.add_argument("--visits", type=int, default=DEFAULTS["visits"], help="per subject")
    p.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="per video")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--confound", type=float, default=DEFAULTS["confound"],
                   help="strength of personal habits on the severity channels (0 = none)")
    p.add_argument("--rater-sd", type=float, default=1.5, help="rater noise, scale points")
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--no-reuse", action="store_true",
                   help="regenerate even if OUT_DIR holds this very cohort")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_synth)

    p = sub.add_parser("check", help="validate a site's manifest and videos")
    p.add_argument("site_dir")
    p.add_argument("--score-max", type=float, help="scale maximum (default: site.json, "
                   "../cohort.json, else 27)")
    p.add_argument("--faces", choices=("auto", "yes", "no"), default="auto",
                   help="check that a face is detectable (auto: when the detector is haar)")
    _add_prep_args(p, full=False)
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("prepare", help="decode, crop faces, cut and cache clips")
    p.add_argument("site_dir")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--score-max", type=float)
    p.add_argument("--no-cache", action="store_true", help="recompute (and overwrite) entries")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_prep_args(p)
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("avec", help="turn an AVEC2013/2014 folder tree into a site folder")
    p.add_argument("root")
    p.add_argument("out_dir")
    p.add_argument("--mode", choices=("symlink", "hardlink", "copy"), default="symlink")
    p.add_argument("--split-from-partition", action="store_true",
                   help="write a split column: Training/Development -> train, Testing -> test")
    p.set_defaults(fn=cmd_avec)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
