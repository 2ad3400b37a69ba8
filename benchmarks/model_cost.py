"""What one MPDRM training step costs, per model size, on this machine.

For each size: parameters per group (shared / local, as `mpdrm.partition` splits them),
forward+backward FLOPs per clip (counted with torch.utils.flop_counter.FlopCounterMode over a full
training step: both networks, RARM, head, losses), the training throughput (clips/s, from the
median time of a full step: forward, MPDRMLoss with batch SupCon, backward, grad clipping, AdamW),
and the achieved FLOP/s as a fraction of this machine's fp32 matmul FLOP/s, measured in the same run;
each size in the standard layout and in the one training uses here (``train.memory_format=auto``:
channels-last on a CPU), the two layouts' steps interleaved.
A last section times one tiny-model step with per-sample gradients (Opacus GradSampleModule in
each grad_sample_mode + DPOptimizer clipping and noise) against the same step without DP.

    python benchmarks/model_cost.py [OUT.json] [--sizes tiny,base,paper] [--device auto]
                                    [--threads N] [--no-dp]

Prints a table and writes JSON (default benchmarks/results/model_cost.json). Timings taken while
other processes load the CPU are not comparable: the JSON records the load average before and
after, and the table warns when the machine was busy.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mpdrm  # noqa: E402
from mpdrm.device import resolve_device  # noqa: E402
from mpdrm.losses import MPDRMLoss  # noqa: E402
from mpdrm.memory_format import clips_in_format, model_in_format, resolve_memory_format  # noqa: E402
from mpdrm.training import TrainConfig, default_step, make_optimizer  # noqa: E402
from report import cpu_model, write_report  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

# (batch, warm-up steps, timed steps) per size and device kind
PLAN = {
    "cpu": {"tiny": (16, 2, 8), "base": (4, 1, 3), "paper": (1, 1, 2)},
    "cuda": {"tiny": (64, 3, 10), "base": (32, 3, 10), "paper": (16, 3, 10)},
}
DP_PLAN = {"cpu": (16, 1, 3), "cuda": (64, 2, 5)}
NUM_SUBJECTS = 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device) -> float:
    """Best fp32 matmul FLOP/s over a few timed bursts."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    best = 0.0
    for _ in range(5):
        reps = 0
        start = time.perf_counter()
        while True:
            torch.mm(a, b)
            reps += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed > 0.25:
                break
        best = max(best, 2 * n**3 * reps / elapsed)
    return best


def make_batch(cfg: mpdrm.MPDRMConfig, b: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {
        "clips": torch.randn(b, cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size, generator=g),
        "target": torch.rand(b, generator=g),
        "subject": torch.arange(b) % NUM_SUBJECTS,
        "visit": torch.arange(b) % 2,
        "video": torch.arange(b),
    }
    return {k: v.to(device) for k, v in batch.items()}


def count_flops(model: torch.nn.Module, cfg: mpdrm.MPDRMConfig, device: torch.device) -> float:
    """fwd+bwd FLOPs per clip of a training step (batch of 2, divided by 2)."""
    batch = make_batch(cfg, 2, device)
    loss_fn = MPDRMLoss()
    with FlopCounterMode(display=False) as counter:
        loss, _ = loss_fn(model(batch["clips"]), batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def time_steps(step, warmup: int, timed: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


#: The layouts each size is timed in (``mpdrm.memory_format``): the standard one, and the one
#: ``train.memory_format=auto`` trains in on this device.
LAYOUTS = ("contiguous", "auto")


def bench_size(size: str, device: torch.device, peak: float) -> list[dict]:
    """One row per layout of :data:`LAYOUTS`, the layouts' steps interleaved so that both see
    the same machine (same model, batch and optimizer)."""
    torch.manual_seed(0)
    model = mpdrm.build_model(size, num_subjects=NUM_SUBJECTS).to(device)
    cfg = model.config
    shared, local = mpdrm.partition(model)
    params = dict(model.named_parameters())
    n_shared = sum(params[k].numel() for k in shared if k in params)
    n_local = sum(params[k].numel() for k in local if k in params)
    flops = count_flops(model, cfg, device)
    b, warm, timed = PLAN[device.type][size]
    batch = make_batch(cfg, b, device)
    optimizer = make_optimizer(model, TrainConfig())
    loss_fn = MPDRMLoss()
    model.train()
    layouts = {name: resolve_memory_format(name, device) for name in LAYOUTS}
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for repeat in range(timed):
        for name, layout in layouts.items():
            with model_in_format(model, layout):
                step_batch = clips_in_format(batch, layout)
                times[name] += time_steps(lambda: default_step(model, step_batch, optimizer, loss_fn, 1.0),
                                          warm if repeat == 0 else 0, 1, device)
    common = {"size": size, "input": [cfg.in_channels, cfg.frames, cfg.image_size, cfg.image_size],
              "params_shared": n_shared, "params_local": n_local, "params_total": n_shared + n_local,
              "shared_keys": len(shared), "local_keys": len(local), "gflop_per_clip_fwd_bwd": flops / 1e9,
              "batch": b}
    return [{**common, "memory_format": name, "layout": str(layouts[name]).removeprefix("torch."),
             **_throughput(times[name], b, flops, peak)} for name in LAYOUTS]


def _throughput(times: list[float], batch: int, flops: float, peak: float) -> dict:
    med = statistics.median(times)
    achieved = flops * batch / med
    return {"step_seconds_median": med, "step_seconds_all": times, "step_seconds_min": min(times),
            "clips_per_second": batch / med, "achieved_gflops": achieved / 1e9,
            "fraction_of_matmul_peak": achieved / peak}


def bench_dp(device: torch.device) -> list[dict]:
    """One tiny step per grad_sample_mode (per-sample grads + DP-SGD clip/noise) vs no DP."""
    from opacus import GradSampleModule
    from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    b, warm, timed = DP_PLAN[device.type]
    rows = []
    base_time = None
    for mode in ("none", "hooks", "ew", "functorch"):
        torch.manual_seed(0)
        model = mpdrm.build_model("tiny", num_subjects=NUM_SUBJECTS).to(device).train()
        batch = make_batch(model.config, b, device)
        optimizer = make_optimizer(model, TrainConfig())
        loss_fn = MPDRMLoss(per_example=True)
        row = {"mode": mode, "batch": b}
        try:
            if mode == "none":
                wrapped, opt = model, optimizer
            else:
                if mode == "ew":
                    wrapped = GradSampleModuleExpandedWeights(model, loss_reduction="mean")
                else:
                    wrapped = GradSampleModule(model, loss_reduction="mean", force_functorch=mode == "functorch")
                opt = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=b)
            times = time_steps(lambda: default_step(wrapped, batch, opt, loss_fn, None), warm, timed, device)
            med = statistics.median(times)
            if mode == "none":
                base_time = med
            row.update(ok=True, step_seconds_median=med, step_seconds_min=min(times),
                       relative_to_no_dp=med / base_time if base_time else None)
            if device.type == "cuda":
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
        except Exception as exc:  # report the mode as not working, keep going
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        rows.append(row)
        del model, optimizer
    return rows


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": cpu_model(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info




def _load() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/model_cost.json")
    ap.add_argument("--sizes", default="tiny,base,paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-dp", action="store_true", help="skip the per-sample gradient section")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    load_before = _load()
    peak = matmul_flops(device)
    rows = [row for s in args.sizes.split(",") if s.strip() for row in bench_size(s.strip(), device, peak)]
    dp_rows = [] if args.no_dp else bench_dp(device)
    load_after = _load()
    result = {
        "machine": machine_info(device),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "matmul_fp32_gflops": peak / 1e9,
        "sizes": rows,
        "per_sample_gradients_tiny": dp_rows,
        "wall_seconds": time.perf_counter() - started,
    }
    print_table(result)
    write_report(args.out, result)
    return result


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"device {m['device']} ({m.get('gpu', m['processor'])}), {m['torch_threads']} torch threads, "
          f"torch {m['torch']}; fp32 matmul {r['matmul_fp32_gflops']:.0f} GFLOP/s")
    head = (f"{'size':<6} {'layout':<18} {'input':<14} {'shared':>10} {'local':>10} {'GFLOP/clip':>11} {'batch':>5} "
            f"{'s/step':>8} {'clips/s':>8} {'GFLOP/s':>8} {'of mm':>6}")
    print(head)
    print("-" * len(head))
    for row in r["sizes"]:
        inp = "x".join(str(v) for v in row["input"])
        print(f"{row['size']:<6} {row.get('layout', 'contiguous_format'):<18} {inp:<14} {row['params_shared']:>10,} {row['params_local']:>10,} "
              f"{row['gflop_per_clip_fwd_bwd']:>11.2f} {row['batch']:>5} {row['step_seconds_median']:>8.3f} "
              f"{row['clips_per_second']:>8.2f} {row['achieved_gflops']:>8.1f} "
              f"{100 * row['fraction_of_matmul_peak']:>5.1f}%")
    if r["per_sample_gradients_tiny"]:
        print("\ntiny, one step with per-sample gradients (Opacus) + DP-SGD clip/noise:")
        for row in r["per_sample_gradients_tiny"]:
            if row["ok"]:
                print(f"  {row['mode']:<10} batch {row['batch']:>3}  {row['step_seconds_median']:.3f} s/step  "
                      f"x{row['relative_to_no_dp']:.1f} of no DP")
            else:
                print(f"  {row['mode']:<10} FAILED: {row['error']}")
    cores = r["machine"]["cpu_count"] or 1
    busy = [v for v in (r["load_average_before"] or [])[:1] + (r["load_average_after"] or [])[:1] if v > cores]
    if busy and r["machine"]["device"] == "cpu":
        print(f"\nWARNING: load average {busy[0]:.1f} > {cores} cores during the run: other processes "
              "competed for the CPU, timings are pessimistic")


if __name__ == "__main__":
    main()
