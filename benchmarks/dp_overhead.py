"""DP-SGD overhead: training step time with Opacus over without, MPDRM tiny and base.

Both sides run the same model weights, the same batch, the same optimizer (AdamW, as
``mpdrm.training``) and the same per-example MPDRM loss; they are timed side by side,
interleaved step by step, so that load on a shared machine hits both alike. The non-DP
side clips the global gradient norm (as ``train_local`` does); the DP side clips per
example and adds noise (``mpdrm.privacy.private_step``). Target: DP / plain <= 1.3.

    python benchmarks/dp_overhead.py [--sizes tiny base] [--modes grouped ew hooks functorch]
                                     [--batch 8] [--steps 8] [--threads 1] [--no-keep-freed-memory]

``grouped`` is the default mode of ``mpdrm.privacy`` (Opacus hooks, with convolutions and
GroupNorms that compute their own per-sample gradients: ``mpdrm.privacy.per_sample_layers``);
``ew``, ``hooks`` and ``functorch`` are Opacus's own modes, for comparison.

Like ``train_local``, it first lets glibc keep freed memory (``mpdrm.allocator``; see
``benchmarks/allocator.py``), and reports minor page faults per step for each side.

Prints a table and writes benchmarks/results/dp_overhead.json.
"""
from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import opacus
import torch
from report import write_report  # benchmarks/ is on sys.path when run as a script
from torch.utils.data import DataLoader

from mpdrm.allocator import keep_freed_memory
from mpdrm.losses import MPDRMLoss
from mpdrm.model import build_model
from mpdrm.privacy import SiteAccountant, make_private, private_step
from mpdrm.training import default_step

RESULTS = Path(__file__).resolve().parent / "results"


def make_batch(cfg: Any, batch: int, subjects: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "clips": torch.randn(batch, cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size, generator=g),
        "target": torch.rand(batch, generator=g),
        "subject": torch.arange(batch) % subjects,
        "visit": torch.zeros(batch, dtype=torch.long),
        "video": torch.arange(batch),
    }


def minor_faults() -> int:
    """Minor page faults of this process so far (fresh memory touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(size: str, modes: list[str], batch: int, steps: int, warmup: int, seed: int) -> dict[str, Any]:
    """Median seconds per step for plain and each DP mode, interleaved."""
    subjects = 8
    torch.manual_seed(seed)
    plain_model = build_model(size, num_subjects=subjects)
    cfg = plain_model.config
    data = make_batch(cfg, batch, subjects, seed)
    loss_fn = MPDRMLoss(task=cfg.task, per_example=True)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-4)
    # a loader only fixes the DP sample rate / expected batch size (batch / dataset size)
    loader = DataLoader([{k: v[i] for k, v in data.items()} for i in range(batch)] * 4, batch_size=batch)

    runners = {"plain": lambda: default_step(plain_model, data, plain_opt, loss_fn, 1.0)}
    privates = {}
    for mode in modes:
        model = copy.deepcopy(plain_model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        private = make_private(model, opt, loader, accountant=SiteAccountant(), noise_multiplier=1.0,
                               max_grad_norm=1.0, grad_sample_mode=mode)
        privates[mode] = private
        runners[mode] = (lambda p: lambda: private_step(p.model, data, p.optimizer, loss_fn))(private)

    times: dict[str, list[float]] = {name: [] for name in runners}
    faults: dict[str, list[int]] = {name: [] for name in runners}
    for i in range(warmup + steps):
        for name, run in runners.items():
            before = minor_faults()
            t = timed(run)
            if i >= warmup:
                times[name].append(t)
                faults[name].append(minor_faults() - before)
    for private in privates.values():
        private.close()

    plain = statistics.median(times["plain"])
    out: dict[str, Any] = {
        "batch": batch,
        "params": sum(p.numel() for p in plain_model.parameters()),
        "input": [cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size],
        "plain_s": plain,
        "plain_s_all": times["plain"],
        "plain_faults": statistics.median(faults["plain"]),
    }
    for mode in modes:
        med = statistics.median(times[mode])
        out[f"{mode}_s"] = med
        out[f"{mode}_s_all"] = times[mode]
        out[f"{mode}_faults"] = statistics.median(faults[mode])
        out[f"{mode}_ratio"] = med / plain
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--modes", nargs="+", default=["grouped", "ew"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="leave glibc's malloc as it is (training keeps freed memory by default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "dp_overhead.json")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    report: dict[str, Any] = {
        "benchmark": "dp_overhead",
        "target_ratio": 1.3,
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "keep_freed_memory": kept,
        "steps": args.steps,
        "warmup": args.warmup,
        "sizes": {},
    }
    header = f"{'size':6} {'batch':>5} {'plain s/step':>13} " + " ".join(f"{m + ' s/step':>16} {'ratio':>6}" for m in args.modes)
    print(header)
    for size in args.sizes:
        res = bench_size(size, args.modes, args.batch, args.steps, args.warmup, args.seed)
        report["sizes"][size] = res
        cells = " ".join(f"{res[f'{m}_s']:16.3f} {res[f'{m}_ratio']:6.2f}" for m in args.modes)
        print(f"{size:6} {args.batch:5d} {res['plain_s']:13.3f} {cells}", flush=True)
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
