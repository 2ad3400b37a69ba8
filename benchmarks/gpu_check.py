"""GPU check: does MPDRM train on this machine's GPU? One prepared script, meant to finish in under 8 minutes (never yet run on a GPU).

1. every model size (tiny, base, paper) trains a few AdamW steps in fp32 and under bf16
   autocast, with clips/s;
2. DP-SGD steps on the device, patient-level and clip-level (Opacus, ``grouped`` mode);
3. a 2-site federated simulation (``mpdrm-simulate``) with ``resources.client_gpus=0.5``.

Without a CUDA device it says so and exits 0 (``--device cpu`` runs the same checks on the
CPU, which is how the suite keeps the script from rotting). Writes
``benchmarks/results/gpu_check.json``.

    python benchmarks/gpu_check.py                       # ./dev bench gpu_check
    python benchmarks/gpu_check.py --device cpu --sizes tiny --steps 1 --no-simulation
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mpdrm.losses import MPDRMLoss  # noqa: E402
from mpdrm.model import build_model  # noqa: E402
from mpdrm.config import make_config  # noqa: E402
from mpdrm.privacy import PatientPoissonLoader, SiteAccountant, make_patient_private, make_private  # noqa: E402

BATCH = 8


class RandomClips(torch.utils.data.Dataset):
    """Random clips at a model's shape, 2 clips per patient."""

    def __init__(self, shape: tuple[int, ...], n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.clips = torch.rand(n, *shape, generator=g)
        self.subjects = [i // 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"clips": self.clips[i], "target": torch.tensor(0.3), "subject": torch.tensor(self.subjects[i]),
                "visit": torch.tensor(0), "video": torch.tensor(i)}


def _batch(data: RandomClips, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.stack([data[i][k] for i in range(BATCH)]).to(device) for k in data[0]}


def _timed(step: Callable[[], float], steps: int, device: torch.device) -> dict[str, Any]:
    step()  # warm-up (kernel selection, allocations)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        losses.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"clips_per_second": BATCH * steps / seconds, "loss": losses[-1], "finite": all(map(math.isfinite, losses))}


def _config(size: str, num_subjects: int, shape: dict[str, int]) -> Any:
    return make_config(size, num_subjects=num_subjects, **shape)


def train_sizes(sizes: list[str], steps: int, device: torch.device, shape: dict[str, int]) -> dict[str, Any]:
    """fp32 and bf16-autocast AdamW steps for every size."""
    out: dict[str, Any] = {}
    for size in sizes:
        cfg = _config(size, BATCH // 2, shape)
        data = RandomClips((cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size))
        batch = _batch(data, device)
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_model(cfg).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            loss_fn = MPDRMLoss(task="regression")

            def step() -> float:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss, _ = loss_fn(model(batch["clips"]), batch)
                loss.backward()
                optimizer.step()
                return float(loss.detach())

            out[f"{size}/{precision}"] = _timed(step, steps, device)
            print(f"train {size:>5} {precision}: {out[f'{size}/{precision}']}", flush=True)
    return out


def dp_steps(steps: int, device: torch.device, shape: dict[str, int]) -> dict[str, Any]:
    """Patient-level and clip-level DP-SGD steps of tiny on ``device``."""
    cfg = _config("tiny", 16, shape)
    data = RandomClips((cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size))
    batch = _batch(data, device)
    loss_fn = MPDRMLoss(task="regression", per_example=True)
    out: dict[str, Any] = {}
    for unit in ("patient", "clip"):
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        common = dict(accountant=SiteAccountant("rdp"), noise_multiplier=1.0, max_grad_norm=1.0)
        if unit == "patient":
            loader = PatientPoissonLoader(data, expected_patients=4, clips_per_patient=2, seed=0)
            private = make_patient_private(model, optimizer, loader, **common)
        else:
            private = make_private(model, optimizer, torch.utils.data.DataLoader(data, batch_size=BATCH), **common)

        def step() -> float:
            parts = private.step(private.model, batch, private.optimizer, loss_fn)
            return float(parts["loss"])

        out[unit] = _timed(step, steps, device)
        private.close()
        print(f"dp {unit:>7}: {out[unit]}", flush=True)
    return out


def simulation(device: torch.device, timeout: float) -> dict[str, Any]:
    """A 2-site, 1-round federated simulation with half a GPU per client."""
    gpus = 0.5 if device.type == "cuda" else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "simulations.simulate", "sites=2", "rounds=1", "data.synth.subjects=4",
                   "data.synth.seconds=4", f"resources.client_gpus={gpus}", "resources.client_cpus=1",
                   f"cache_dir={tmp}/cache", f"run_dir={run_dir}", f"train.device={device.type}"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        result = {"returncode": done.returncode, "wall_seconds": time.perf_counter() - start, "client_gpus": gpus}
        if done.returncode == 0:
            summary = json.loads((run_dir / "summary.json").read_text())
            result["final_rmse"] = summary["final"]["rmse"]
        else:
            result["tail"] = (done.stdout + done.stderr)[-2000:]
    print(f"simulation: {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base", "paper"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=None, help="override every size's (a quick dry run)")
    parser.add_argument("--frames", type=int, default=None, help="override every size's (a quick dry run)")
    parser.add_argument("--no-simulation", action="store_true")
    parser.add_argument("--simulation-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): skipped", flush=True)
        return 0
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "steps": args.steps}
    started = time.perf_counter()
    shape = {k: v for k, v in {"image_size": args.image_size, "frames": args.frames}.items() if v is not None}
    report["train"] = train_sizes(args.sizes, args.steps, device, shape)
    report["dp"] = dp_steps(args.steps, device, shape)
    if not args.no_simulation:
        report["simulation"] = simulation(device, args.simulation_timeout)
    report["wall_seconds"] = time.perf_counter() - started
    failures = [k for k, v in {**report["train"], **report["dp"]}.items() if not v["finite"]]
    if report.get("simulation", {}).get("returncode", 0) != 0:
        failures.append("simulation")
    report["failures"] = failures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {'FAILED: ' + ', '.join(failures) if failures else 'every check passed'} "
          f"in {report['wall_seconds']:.0f} s; wrote {args.out}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
