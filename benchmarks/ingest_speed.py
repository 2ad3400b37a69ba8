"""Ingestion speed of the site data pipeline (``mpdrm.data.prepare``).

Two paths:
- ``haar``: a real photograph (scikit-image's astronaut) moving and zooming over a textured
  background, 640x480 at 30 fps - a typical interview recording - through decode, resample to
  15 fps, Haar detection at the default settings (every 4th frame, boxes interpolated between
  detections, a video's first second searched whole when it starts with several boxes),
  smoothing, crop, clips; as variants the old default (every frame, last box carried),
  every 4th frame with the last box carried, and the default starting on the largest box at
  once (``start_seconds=0``, as before the start window);
- ``none``: the synthetic cohort's videos (already face crops), decode + resample + resize.

For each path and worker count, the cache is bypassed (``reuse=False``) and we report:
- ``fps_per_worker``: source frames decoded per second of one worker's processing time
  (sum of per-video processing times), i.e. what one core sustains;
- ``fps_total``: source frames per wall second with N workers;
- ``rtf``: real-time factor, seconds of video processed per wall second;
- ``track_error_mean`` / ``_p95`` (Haar path): the smoothed track's distance from the true
  face centre (known from the motion), in units of the track's side; ``on_face``: the share
  of frames where it is under half a side, ``track_error_on_face`` the mean distance there.
Also the load average at the start: on a shared machine the figures fall with it.

Run: ``./dev bench ingest_speed [--quick] [--workers 1 2]``; writes
``benchmarks/results/ingest_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpdrm.data.prepare import PrepareConfig, prepare_site, process_video  # noqa: E402
from mpdrm.data.synth import generate_cohort  # noqa: E402


#: Motion phases of the benchmark's videos. The default Haar settings (``detect_every``,
#: ``fill``, the near-face window) were chosen on phases 0-7; the benchmark reports on others.
PHASES = range(10, 14)
#: Where the astronaut photo's face centre is, in the photo's pixels (its warp's anchor).
FACE_ANCHOR = (224.5, 113.5)


def astronaut_pose(i: int, n: int, phase: int, size=(640, 480)) -> tuple[float, float, float]:
    """(face centre x, face centre y, scale) of source frame ``i`` of ``n`` in the video with
    motion ``phase``: the face drifts +-120 px across, +-40 px down, and zooms 0.55-1.25x."""
    w, h = size
    u = i / max(n - 1, 1)
    s = 0.9 + 0.35 * np.sin(2 * np.pi * u + phase)     # face 52 .. 119 px
    fx = w / 2 + 120 * np.sin(2 * np.pi * u * 1.3 + phase)
    fy = h / 2 + 40 * np.sin(2 * np.pi * u * 0.7)
    return fx, fy, s


def astronaut_site(root: Path, videos: int, seconds: float, fps: float = 30.0,
                   size=(640, 480), phases=None) -> Path:
    """A site of ``videos`` recordings of the astronaut photo moving over a blurred-noise
    background (``astronaut_pose``), one per phase (default :data:`PHASES`, cycled)."""
    from skimage.data import astronaut
    img = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    w, h = size
    phases = list(phases if phases is not None else PHASES)
    site = root / "haar-site"
    (site / "videos").mkdir(parents=True, exist_ok=True)
    rows = ["video,subject,visit,score"]
    n = int(seconds * fps)
    for v in range(videos):
        phase = phases[v % len(phases)]
        rng = np.random.default_rng(v)
        bg = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 8)
        bg = cv2.normalize(bg, None, 30, 200, cv2.NORM_MINMAX)
        wr = cv2.VideoWriter(str(site / f"videos/a{v}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                             fps, (w, h))
        for i in range(n):
            fx, fy, s = astronaut_pose(i, n, phase, size)
            m = np.float32([[s, 0, fx - FACE_ANCHOR[0] * s], [0, s, fy - FACE_ANCHOR[1] * s]])
            frame = bg.copy()
            warped = cv2.warpAffine(img, m, (w, h))
            mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (w, h)) > 0
            frame[mask] = warped[mask]
            wr.write(frame)
        wr.release()
        rows.append(f"videos/a{v}.mp4,A{v},1,10,{phase}")
    rows[0] += ",phase"
    (site / "manifest.csv").write_text("\n".join(rows) + "\n")
    return site


def track_error(site: Path, cfg: PrepareConfig) -> dict:
    """Distance of the smoothed face track's centre from the true face centre, over every
    decoded frame of the site's videos, in units of the track's side: mean and 95th
    percentile; the share of frames where the track is on the face (distance < half a side)
    and the mean distance on those frames."""
    errors = []
    for line in (site / "manifest.csv").read_text().splitlines()[1:]:
        video, *_, phase = line.split(",")
        out = process_video(site / video, cfg)
        if out.track is None:
            raise RuntimeError(f"benchmark input failed: {out.meta.get('reason')}")
        src = out.meta["source_frames"]
        ratio = out.meta["source_fps"] / cfg.fps
        for k, (cx, cy, side) in enumerate(out.track):
            fx, fy, _ = astronaut_pose(min(src - 1, int(np.floor(k * ratio + 0.5))), src,
                                       int(phase))
            errors.append(np.hypot(cx - fx, cy - fy) / side)
    errors = np.asarray(errors)
    on_face = errors < 0.5
    return {"track_error_mean": round(float(errors.mean()), 4),
            "track_error_p95": round(float(np.percentile(errors, 95)), 4),
            "on_face": round(float(on_face.mean()), 4),
            "track_error_on_face": round(float(errors[on_face].mean()), 4)}


def measure(site: Path, cfg: PrepareConfig, workers: int) -> dict:
    t0 = time.perf_counter()
    res = prepare_site(site, cfg, workers=workers, progress=False, reuse=False)
    wall = time.perf_counter() - t0
    ok = res.ok
    if len(ok) != len(res.entries):
        raise RuntimeError(f"benchmark input failed: {[e.get('reason') for e in res.skipped]}")
    frames = sum(e["source_frames"] for e in ok)
    seconds = sum(e["duration_s"] for e in ok)
    busy = sum(e["seconds"] for e in ok)
    return {"videos": len(ok), "source_frames": frames, "video_seconds": round(seconds, 2),
            "workers": workers, "wall_s": round(wall, 3),
            "fps_per_worker": round(frames / busy, 1), "fps_total": round(frames / wall, 1),
            "rtf": round(seconds / wall, 2),
            "face_rate": (round(float(np.mean([e["face_rate"] for e in ok])), 3)
                          if cfg.detector == "haar" else None),
            "clips": res.num_clips}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--workers", type=int, nargs="+", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/ingest_speed.json"))
    args = ap.parse_args(argv)
    ncpu = os.cpu_count() or 1
    workers = args.workers or sorted({1, min(2, ncpu)})
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_haar, sec = (2, 4.0) if args.quick else (4, 10.0)
        haar = astronaut_site(tmp, n_haar, sec)
        cohort = generate_cohort(tmp / "cohort", sites=1, subjects=4 if args.quick else 8,
                                 visits=3, seconds=8.0, seed=0)
        synth = cohort / "site-01"
        cam = json.loads((cohort / "cohort.json").read_text())["cameras"]["site-01"]
        inputs = {"haar": f"{n_haar} x {sec:g} s, 640x480, 30 fps (astronaut photo, moving)",
                  "none": f"{len(list((synth / 'videos').glob('*.mp4')))} x 8 s, "
                          f"{cam['width']}x{cam['height']}, {cam['fps']:g} fps (synthetic)"}
        default = PrepareConfig(detector="haar")
        cases = [(f"haar {default.detect_every} {default.fill}", haar, default),
                 ("haar 1 carry", haar, PrepareConfig(detector="haar", detect_every=1,
                                                      fill="carry")),
                 (f"haar {default.detect_every} carry", haar,
                  PrepareConfig(detector="haar", fill="carry")),
                 (f"haar {default.detect_every} {default.fill}, start at once", haar,
                  PrepareConfig(detector="haar", start_seconds=0)),
                 ("none", synth, PrepareConfig(detector="none"))]
        for name, site, cfg in cases:
            error = track_error(site, cfg) if cfg.detector == "haar" else {}
            for w in workers:
                r = measure(site, cfg, w)
                r.update(error, path=name, default=cfg == default)
                if cfg.detector == "haar":
                    r.update(detect_every=cfg.detect_every, fill=cfg.fill,
                             start_seconds=cfg.start_seconds)
                r["input"] = inputs[cfg.detector]
                rows.append(r)
                print(f"{name:15s} workers={w}: {r['fps_per_worker']:8.1f} frames/s per worker, "
                      f"{r['fps_total']:8.1f} frames/s total, real-time x{r['rtf']:.1f} "
                      f"({r['source_frames']} frames, {r['video_seconds']} s of video, "
                      f"{r['wall_s']} s wall)", flush=True)
    print()
    print(f"{'path':15s} {'workers':>7s} {'fr/s/worker':>12s} {'fr/s total':>11s} {'RTF':>7s} "
          f"{'face rate':>9s} {'track err':>9s} {'on face':>7s} {'err there':>9s}")
    for r in rows:
        fr = "-" if r["face_rate"] is None else f"{r['face_rate']:.2f}"
        te, on, there = (f"{r['track_error_mean']:.4f}", f"{r['on_face']:.3f}",
                         f"{r['track_error_on_face']:.4f}") if "on_face" in r else ("-", "-", "-")
        print(f"{r['path']:15s} {r['workers']:7d} {r['fps_per_worker']:12.1f} "
              f"{r['fps_total']:11.1f} {r['rtf']:7.1f} {fr:>9s} {te:>9s} {on:>7s} {there:>9s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "ingest_speed", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": ncpu, "load_average_at_start": load0,
                    "platform": platform.platform(), "python": platform.python_version(),
                    "opencv": cv2.__version__},
        "config": {"fps": 15.0, "frames": 16, "stride": 2, "hop": 8, "size": 64,
                   "grayscale": True, "quick": args.quick,
                   "haar_phases": list(PHASES)},
        "results": rows}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
