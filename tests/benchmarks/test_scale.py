"""The scale study's parts (``benchmarks/scale.py``): the process-tree memory sampler on a real
tree, round times from ``summary.json``, the least-squares fit, the verdict and the table."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.scale import (MIB, Snapshot, TreeSampler, concurrency, drop_state, finished, fit_line, growth, markdown,
                              memory_verdict, process_kind, round_times, timings)

CHILD_MIB = 80
HOLD = f"import time; b = bytes([1]) * ({CHILD_MIB} << 20); print('ready', flush=True); time.sleep(5)"
#: A parent that starts two children, each holding CHILD_MIB MiB of touched memory, and a third
#: child that starts a grandchild holding as much and exits once it is ready (the grandchild is
#: then an orphan, reparented out of the tree).
TREE = textwrap.dedent(f"""
    import subprocess, sys, time
    hold = {HOLD!r}
    orphan = ("import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', %r], stdout=subprocess.PIPE); "
              "g.stdout.readline(); time.sleep(0.6); print('ready', flush=True)" % hold)
    kids = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            for code in (hold, hold, orphan)]
    for kid in kids:
        kid.stdout.readline()
    kids[2].wait()
    print("all ready", flush=True)
    time.sleep(2)
""")


def test_the_sampler_counts_every_process_of_a_real_tree_orphans_included():
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    held = 3 * CHILD_MIB
    with TreeSampler(parent.pid, interval=0.1) as sampler:
        assert parent.stdout.readline().strip() == "all ready"
        after_orphaning = sampler.sample()  # the grandchild's parent has exited
        assert parent.wait(timeout=30) == 0
    assert after_orphaning.rss >= held * MIB and len(after_orphaning.processes) == 4  # parent, 2 kids, orphan
    got = sampler.result()
    assert got["peak_rss_mib"] >= held and got["peak_pss_mib"] >= held, got
    assert got["processes_at_peak"] >= 4
    assert got["largest_process"]["pss"]["mib"] >= CHILD_MIB and got["largest_process"]["rss"]["mib"] >= CHILD_MIB
    assert got["by_kind_at_peak"]["other"]["n"] == got["processes_at_peak"] and got["samples"] >= 5
    assert got["sampler_cpu_seconds"] > 0


def test_rss_only_sampling_reads_status():
    child = subprocess.Popen([sys.executable, "-c", f"import time; b = bytes([1]) * ({CHILD_MIB} << 20); "
                              "print('ready', flush=True); time.sleep(1)"], stdout=subprocess.PIPE, text=True)
    with TreeSampler(child.pid, interval=0.1, pss=False) as sampler:
        child.stdout.readline()
        time.sleep(0.3)
        assert child.wait(timeout=30) == 0
    got = sampler.result()
    assert got["peak_pss_mib"] is None and got["peak_rss_mib"] >= CHILD_MIB


def test_shared_memory_is_reported_apart():
    code = ("import mmap, time; m = mmap.mmap(-1, 40 << 20, flags=mmap.MAP_SHARED)\n"
            "for _ in range(40): m.write(bytes([1]) * (1 << 20))\n"  # touched 1 MiB at a time: no private copy
            "print('ready', flush=True); time.sleep(1)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with TreeSampler(child.pid, interval=0.1) as sampler:
        child.stdout.readline()
        time.sleep(0.3)
        assert child.wait(timeout=30) == 0
    got = sampler.result()
    assert got["shmem_pss_at_peak_mib"] >= 40 and got["by_kind_at_peak"]["other"]["shmem_pss_mib"] >= 40
    assert got["peak_pss_mib"] >= got["shmem_pss_at_peak_mib"]


def test_a_process_without_pss_counts_at_its_rss_and_keeps_the_pss_peak():
    mixed = Snapshot([(1, "engine", 100 * MIB, 60 * MIB, 0), (2, "ray_worker", 30 * MIB, None, None)])
    assert mixed.pss == 90 * MIB and mixed.rss == 130 * MIB
    assert Snapshot([(1, "engine", 100 * MIB, None, None)]).pss is None and Snapshot([]).pss == 0
    sampler = TreeSampler(root=-1)
    sampler._update(Snapshot([(1, "engine", 100 * MIB, 95 * MIB, 0)]))
    sampler._update(mixed)  # a shut-down sample: more RSS, less PSS
    got = sampler.result()
    assert got["peak_pss_mib"] == 95 and got["peak_rss_mib"] == 130


def test_process_kinds_of_a_simulation():
    assert process_kind("ray::ClientAppActor.run") == "client_actor"
    assert process_kind("ray::IDLE") == "ray_worker"
    assert process_kind("/v/bin/python /v/lib/ray/_private/workers/default_worker.py --x") == "ray_worker"
    assert process_kind("/v/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --a=b "
                        "--python_worker_command=/v/bin/python /v/ray/_private/workers/default_worker.py") == "raylet"
    assert process_kind("/v/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --l") == "gcs"
    assert process_kind("/v/bin/python -P -m simulations.engine /r/simulation_spec.json") == "engine"
    assert process_kind("/v/bin/python -m simulations.simulate sites=8") == "simulate"
    assert process_kind("/v/bin/python /v/lib/python3.11/site-packages/ray/dashboard/dashboard.py") == "ray_other"
    assert process_kind("ray::DashboardAgent") == "ray_other"
    assert process_kind("/v/bin/python -B -c from multiprocessing.forkserver import main") == "helper"
    assert process_kind("") == "other"


def test_round_times_come_from_the_cumulative_clock_with_round_zero_apart():
    summary = {"wall_seconds": 20.0, "initial": {"wall_seconds": 8.0},
               "rounds": [{"wall_seconds": 12.0}, {"wall_seconds": 15.0}, {"wall_seconds": 20.0}]}
    got = round_times(summary)
    assert got["initial_seconds"] == 8.0 and got["round_seconds"] == [4.0, 3.0, 5.0]
    assert got["seconds_per_round"] == pytest.approx(4.0) and "round 0 apart" in got["round_source"]


def test_without_per_round_clocks_the_whole_wall_is_shared_and_said_so():
    got = round_times({"wall_seconds": 20.0, "initial": {}, "rounds": [{}, {}]})
    assert got["seconds_per_round"] == 10.0 and got["initial_seconds"] is None
    assert got["round_source"].startswith("fallback")


def test_timings_split_the_process_wall():
    summary = {"wall_seconds": 20.0, "engine_seconds": 26.0, "process_seconds": 38.0, "initial": {"wall_seconds": 8.0},
               "rounds": [{"wall_seconds": 14.0}, {"wall_seconds": 20.0}]}
    got = timings(summary, process_seconds=40.0)
    assert got["startup_seconds"] == 20.0 and got["engine_overhead_seconds"] == 6.0 and got["rounds"] == 2
    assert got["outside_engine_seconds"] == 12.0 and got["seconds_per_round"] == 6.0
    older = timings({"wall_seconds": 20.0, "initial": {}, "rounds": [{}, {}]}, 40.0)
    assert older["engine_overhead_seconds"] is None and older["outside_engine_seconds"] is None


def test_fit_line_recovers_a_line_and_needs_two_distinct_sites():
    fit = fit_line([8, 32, 64], [3 + 2 * 8, 3 + 2 * 32, 3 + 2 * 64])
    assert fit["intercept"] == pytest.approx(3) and fit["slope"] == pytest.approx(2) and fit["r2"] == pytest.approx(1)
    noisy = fit_line([8, 32, 64], [10.0, 14.0, 12.0])
    assert noisy["slope"] == pytest.approx(48 / (4736 / 3)) and 0 <= noisy["r2"] < 1
    assert fit_line([8, 8], [1.0, 2.0]) is None and fit_line([8], [1.0]) is None


def test_the_verdict_asks_what_share_of_the_largest_peak_grows_with_the_sites():
    assert memory_verdict(2.0, 400.0, 64, 3000.0)["holds"] is True  # 128 MiB of 3000: 4.3 %
    missed = memory_verdict(66.8, 760.0, 64, 6820.0)  # the 2026-11-30 run: 63 % of the peak
    assert missed["holds"] is False and missed["sites_share_of_peak"] == pytest.approx(66.8 * 64 / 6820)
    assert missed["slope_over_client"] == pytest.approx(66.8 / 760)  # reported beside it
    assert memory_verdict(4.6, 400.0, 64, 3000.0)["holds"] is True and memory_verdict(4.7, 400.0, 64, 3000.0)["holds"] is False
    assert memory_verdict(None, 400.0, 64, 3000.0)["holds"] is None and memory_verdict(1.0, None, None, None)["holds"] is None
    assert "10%" in missed["rule"]


def memory(peak: float, client: float) -> dict:
    return {"peak_pss_mib": peak, "peak_rss_mib": 1.5 * peak, "client_actor_pss_mib": client,
            "client_actor_rss_mib": client, "processes_at_peak": 14,
            "largest_process": {"pss": {"mib": client, "kind": "client_actor"}}}


def test_growth_fits_memory_and_time_and_renders_a_table():
    rows = [{"sites": n, "concurrency": 2, "seconds_per_round": 1.0 + 0.5 * n, "initial_seconds": 5.0,
             "serverapp_seconds": 9.0, "process_seconds": 30.0, "startup_seconds": 21.0, "round_source": "summary",
             "memory": memory(2000.0 + 50.0 * n, 400.0)} for n in (8, 32, 64)]
    g = growth(rows)
    assert g["memory"] == "PSS" and g["fits"]["memory_pss_mib"]["slope"] == pytest.approx(50.0)
    assert g["fits"]["memory_rss_mib"]["slope"] == pytest.approx(75.0)
    assert g["fits"]["seconds_per_round"]["slope"] == pytest.approx(0.5)
    assert g["memory_ratio"] == {"sites": [8, 64], "ratio": pytest.approx(5200 / 2400)}
    assert g["verdict"]["holds"] is False and g["verdict"]["client_mib"] == 400.0
    assert g["by_kind_mib_per_site"] == {} and g["shmem_mib_per_site"] is None  # no breakdown in these rows
    shared = [{**r, "memory": {**r["memory"], "shmem_pss_at_peak_mib": 100.0 + 6.0 * r["sites"]}} for r in rows]
    assert growth(shared)["shmem_mib_per_site"] == pytest.approx(6.0)
    by_kind = [{**r, "memory": {**r["memory"], "by_kind_at_peak": {
        "engine": {"pss_mib": 500.0 + 40.0 * r["sites"]}, "client_actor": {"pss_mib": 800.0 + 10.0 * r["sites"]},
        **({"gcs": {"pss_mib": 40.0}} if r["sites"] > 8 else {})}}} for r in rows]
    slopes = growth(by_kind)["by_kind_mib_per_site"]
    assert list(slopes) == ["engine", "client_actor", "gcs"] and slopes["engine"] == pytest.approx(40.0)
    flat = growth([{**r, "memory": memory(2000.0 + 0.5 * r["sites"], 400.0)} for r in rows])
    assert flat["verdict"]["holds"] is True
    text = markdown({"per_site": "2 subjects", "rows": rows, "growth": g})
    assert "| 64 | 2 | 33.00 | 5.0 | 9.0 | 30.0 | 21.0 | 5200 | 7800 | 400 | 14 | 400 (client_actor) |" in text
    assert "50.00 MiB per site" in text and "missed" in text


def test_concurrency_is_engine_cpus_over_client_cpus():
    assert concurrency(2, 1.0) == 2 and concurrency(2, 2.0) == 1 and concurrency(16, 3.0) == 5
    assert concurrency(1, 2.0) == 1
    assert MIB == 1 << 20


def test_a_measured_run_is_reused_only_with_the_same_overrides_and_keeps_what_it_needs(tmp_path: Path):
    run = tmp_path / "sites-8"
    (run / "site-state" / "site-01").mkdir(parents=True)
    (run / "site-state" / "site-01" / "site_state.safetensors").write_bytes(b"x")
    for name in ("checkpoint.safetensors", "checkpoint.prev.safetensors"):
        (run / name).write_bytes(b"x")
    (run / "summary.json").write_text("{}")
    assert finished(run, ["sites=8"]) is None  # no measurement yet
    (run / "scale_measure.json").write_text(json.dumps({"overrides": ["sites=8"], "process_seconds": 3.0}))
    drop_state(run)
    assert sorted(p.name for p in run.iterdir()) == ["scale_measure.json", "summary.json"]
    assert finished(run, ["sites=8"])["process_seconds"] == 3.0 and finished(run, ["sites=32"]) is None
