"""Scoring speed at a site: seconds of video scored per wall second (decode + Haar face track
+ crops + model), for the tiny and base models (untrained weights: speed does not depend on
them), with 1 and 2 threads.

The video is scikit-image's astronaut moving and zooming over a blurred background (320x240,
15 fps), so the Haar path finds a real face. Run: ``python benchmarks/scoring_speed.py
[--seconds 20]``; writes ``benchmarks/results/scoring_speed.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mpdrm  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from mpdrm.data.prepare import PrepareConfig, process_video  # noqa: E402
from mpdrm.inference import load_model_dir  # noqa: E402
from mpdrm.inference.modeldir import write_model_dir  # noqa: E402

W, H, FPS = 320, 240, 15.0
FACE_CX, FACE_CY = 224.5, 113.5


def face_video(path: Path, seconds: float) -> Path:
    """The astronaut's face drifting and zooming for ``seconds`` at 15 fps."""
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    bg = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 6), None, 30, 200,
                       cv2.NORM_MINMAX)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    n = int(seconds * FPS)
    for i in range(n):
        u = i / FPS
        s = 0.45 + 0.1 * np.sin(u / 2)
        fx, fy = 160 + 60 * np.sin(u / 3), 110 + 20 * np.sin(u / 2)
        m = np.float32([[s, 0, fx - FACE_CX * s], [0, s, fy - FACE_CY * s]])
        frame = bg.copy()
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (W, H)) > 0
        frame[mask] = cv2.warpAffine(img, m, (W, H))[mask]
        writer.write(frame)
    writer.release()
    return path


def model_dir(path: Path, size: str) -> Path:
    """A model directory of ``size`` with untrained weights, Haar detector, every clip window."""
    torch.manual_seed(0)
    model = mpdrm.build_model(size, num_subjects=2).eval()
    c = model.config
    prep = PrepareConfig(frames=c.frames, size=c.image_size, grayscale=c.in_channels == 1, detector="haar", fps=FPS)
    meta = {"model": c.to_dict(), "prepare": dataclasses.asdict(prep), "task": "regression", "num_classes": 2,
            "score_max": 27.0, "personality": "clip", "mode": "mpdrm", "subjects": [], "site": "bench",
            "run_id": None, "round": 0}
    return write_model_dir(path, model.state_dict(), {"ids": [], "reference": None}, meta)


def measure(model_path: Path, video: Path, seconds: float, threads: int) -> dict[str, float]:
    """One warm-up, then one timed ``score_video``; decode + face alone timed separately."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    sm = load_model_dir(model_path)
    sm.score_video(video)                                  # warm-up (cascade load, allocator)
    t0 = time.perf_counter()
    process_video(video, sm.prepare)
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    row = sm.score_video(video)
    wall = time.perf_counter() - t0
    return {"threads": threads, "wall_s": round(wall, 3), "decode_face_s": round(decode, 3),
            "model_s": round(max(wall - decode, 0.0), 3), "clips": row.clips,
            "video_seconds_per_wall_second": round(seconds / wall, 2)}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the scored video")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scoring_speed.json"))
    args = ap.parse_args(argv)
    report = {"cpu": cpu_name(), "logical_cpus": torch.get_num_threads(), "torch": torch.__version__,
              "opencv": cv2.__version__, "video": f"{W}x{H} at {FPS:g} fps, {args.seconds:g} s, Haar", "results": []}
    print(f"CPU: {report['cpu']}")
    with tempfile.TemporaryDirectory() as tmp:
        video = face_video(Path(tmp) / "face.mp4", args.seconds)
        for size in args.sizes:
            path = model_dir(Path(tmp) / size, size)
            for threads in args.threads:
                r = {"size": size, **measure(path, video, args.seconds, threads)}
                report["results"].append(r)
                print(f"{size:5s} threads {threads}: {r['video_seconds_per_wall_second']:6.2f} s of video per s "
                      f"(wall {r['wall_s']} s = decode+face {r['decode_face_s']} s + model {r['model_s']} s; "
                      f"{r['clips']} clips)")
    write_report(args.out, report)


if __name__ == "__main__":
    main()
