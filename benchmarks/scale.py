"""Scale: seconds per round and peak resident memory of a simulated federation of 8, 32 and 64
sites on this machine, and how each grows with the number of sites.

Every measurement is a real federated run (``mpdrm-simulate``: Flower simulation on Ray) of a
generated cohort with the same, smallest work per site at every N, so that a 64-site round stays
around a minute on 2 cores: 2 subjects (the fewest a subject-disjoint split accepts: one trains,
one is held out), 1 visit of 2.5 s each (the shortest video that yields a 16-frame clip at stride
2 and 15 fps; 2.0 s yields none), 32 px, 1 epoch, ``model=tiny``, cohort prepared in-process
(``data.prepare_workers=1``: no worker pool per site). Ray gets
``--num-cpus`` CPUs and each ClientApp ``--client-cpus``, so ``num_cpus // client_cpus`` clients
are active at once whatever N is (2 on 2 cores).

Time. ``summary.json`` gives the ServerApp's clock at the end of the initial evaluation (round 0)
and of each round (``initial``/``rounds[i]["wall_seconds"]``, cumulative): seconds per round is
the mean of the differences over rounds 1..R; round 0 (the untrained model's evaluation, the
ClientApps' first start) is reported apart. Without those fields the figure is the ServerApp's
whole wall over R (round 0 included) and ``round_source`` says so. Start-up is this script's
wall of the whole ``mpdrm-simulate`` process minus the ServerApp's wall (interpreter, Hydra,
generating and preparing the cohort unless cached, Ray start and shut-down); when the summary has
``engine_seconds``, ``engine_overhead`` is Ray's part of it (``engine_seconds - wall_seconds``)
and ``outside_engine`` the cohort's (``process_seconds - engine_seconds``).

Memory. A thread samples, every ``--interval`` s, every process of the run: the
``mpdrm-simulate`` process and all its descendants (the simulation engine, Ray's GCS, raylet,
dashboard and log monitors, agents and every worker and ClientApp actor; they all descend from
it), plus any process seen in the tree before that is still alive (so one reparented to init is
not lost). From ``/proc/<pid>/smaps_rollup`` it sums RSS and PSS (PSS divides each shared page
among the processes that map it, so the sum does not count shared libraries and Ray's shared
object store several times; it is the headline), and keeps the peak of each sum, the process
count and a per-kind breakdown at the PSS peak (with the shared memory's part, ``Pss_Shmem``:
mostly Ray's object store, which carries the messages), and the largest single process. Reading
``smaps_rollup`` costs a few ms per process; the sampler's own CPU time is reported. One active
client's memory is the largest ``ray::ClientAppActor`` process seen.

Growth. Least squares ``y = a + b N`` over the measured N for peak PSS, peak RSS and seconds per
round; ``b`` is the cost of one more site. Target ("memory grows with the number of concurrently
active clients, not with the number of sites"): it holds when, at the largest N measured, the
part of the peak that grows with the sites is under 10 % of that peak (``b_PSS * N < 0.10 *
peak PSS(N)``); one more site's memory over one active client's (``b_PSS / client PSS``) is
reported beside it.

    python benchmarks/scale.py              # 8, 32 and 64 sites, 3 rounds (5 minutes on 2 idle cores)
    python benchmarks/scale.py --quick      # 2, 4 and 8 sites, 2 rounds (about 2 minutes on 2 cores)

On 2 cores (shared with another simulation) the quick form measured about 0.9 s per round per site
and 59 MiB of peak PSS per site; by that line a 64-site round takes about a minute. The full
study took 300 s on an idle 2-core Xeon (2026-11-30: 42 s per 64-site round; the cohorts are
generated once, a few tenths of a second per site).

Finished runs under ``--work`` (their measurement, same settings) are reused; the generated cohorts
are cached there (``FEDMPDRM_CACHE=<work>/cache``). A run writes about 70 MB of site state per site
(7 GB for the full study), removed once measured unless ``--keep-state``. Prints a table and writes
``benchmarks/results/scale.json``, ``scale.md`` and, with matplotlib, ``scale.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import quick_paths, write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_WORK = HERE / "results" / "scale_runs"
DEFAULT_OUT = HERE / "results" / "scale.json"
FULL_SITES, QUICK_SITES = (8, 32, 64), (2, 4, 8)
MEASURE_FILE = "scale_measure.json"
MIB = 1024 * 1024
#: The target holds when, at the largest N, what the sites add (slope x N) is under this share of the peak.
TARGET_SHARE = 0.10
TARGET = "memory grows with the number of concurrently active clients, not with the number of sites"


# --- the process tree's memory (/proc) ---------------------------------------------------------

def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: ``pid -> (parent pid, start time in clock ticks)``."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    """``root`` and every process below it in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root] if root in table else []
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def process_memory(pid: int, pss: bool = True) -> tuple[int, int | None, int | None] | None:
    """``(RSS, PSS, PSS of shared memory)`` in bytes; the last two ``None`` when not asked for or
    not readable; ``None`` if the process is gone. Shared memory (``Pss_Shmem``) is mostly Ray's
    object store (``/dev/shm``), where the messages to and from the ClientApps travel."""
    if pss:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            values = {k: int(v.split()[0]) * 1024 for k, v in
                      (line.split(":", 1) for line in text.splitlines()[1:] if ":" in line)}
            if "Rss" in values and "Pss" in values:
                return values["Rss"], values["Pss"], values.get("Pss_Shmem")
        except (OSError, ValueError):
            pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024, None, None
        return 0, None, None  # a kernel thread or a process exiting: no user memory
    except OSError:
        return None


def command_line(pid: int) -> str:
    """The process's command line (Ray workers rename themselves: ``ray::ClientAppActor.run``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_kind(cmdline: str) -> str:
    """What a process of the run is, from its command line (the program's name first: the raylet's
    arguments name the worker script)."""
    program = Path(cmdline.split(" ", 1)[0]).name if cmdline else ""
    rules = ((program == "raylet", "raylet"), (program == "gcs_server", "gcs"),
             ("ClientAppActor" in cmdline, "client_actor"),
             ("ray::IDLE" in cmdline or "default_worker.py" in cmdline, "ray_worker"),
             ("simulations.engine" in cmdline, "engine"),
             ("simulations.simulate" in cmdline or "mpdrm-simulate" in cmdline, "simulate"),
             (cmdline.startswith("ray::") or "/ray/" in cmdline, "ray_other"),
             ("multiprocessing" in cmdline, "helper"))
    return next((kind for hit, kind in rules if hit), "other")


@dataclass
class Snapshot:
    """One sample of the tree: ``(pid, kind, rss, pss, shmem pss)`` per process (bytes; the last
    two may be None)."""

    processes: list[tuple[int, str, int, int | None, int | None]]

    @property
    def rss(self) -> int:
        return sum(p[2] for p in self.processes)

    @property
    def pss(self) -> int | None:
        """The PSS sum, a process whose PSS could not be read (it was exiting) counted at its RSS;
        ``None`` when no PSS was read (RSS-only sampling)."""
        if self.processes and all(p[3] is None for p in self.processes):
            return None
        return sum(p[3] if p[3] is not None else p[2] for p in self.processes)

    @property
    def shmem(self) -> int:
        return sum(p[4] or 0 for p in self.processes)

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Count, RSS, PSS and shared-memory PSS (MiB) of each kind of process."""
        kinds: dict[str, dict[str, float]] = {}
        for _, kind, rss, pss, shmem in self.processes:
            k = kinds.setdefault(kind, {"n": 0, "rss_mib": 0.0, "pss_mib": 0.0, "shmem_pss_mib": 0.0})
            k["n"] += 1
            k["rss_mib"] += rss / MIB
            k["pss_mib"] += (pss if pss is not None else rss) / MIB
            k["shmem_pss_mib"] += (shmem or 0) / MIB
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["pss_mib"]))


@dataclass
class TreeSampler:
    """Samples the memory of ``root``'s process tree from a thread, keeping the peaks.

    Use as a context manager around the run: one sample on entry, then one every ``interval``
    seconds until exit. Counted: ``root``, its descendants, and every process counted before that
    is still alive (same pid and start time), so a process reparented away from the tree stays in.
    """

    root: int
    interval: float = 0.5
    pss: bool = True
    samples: int = 0
    peak: Snapshot | None = None  # the sample with the largest PSS sum (RSS without PSS)
    peak_rss: int = 0
    largest: dict[str, tuple[int, str]] = field(default_factory=dict)  # "rss"/"pss" -> (bytes, kind)
    kind_max: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> largest process
    kind_count_max: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    _seen: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def tracked(self) -> set[int]:
        """The run's processes now."""
        table = process_table()
        alive = {pid for pid, start in self._seen.items() if table.get(pid, (0, -1))[1] == start}
        pids = descendants(self.root, table) | alive
        self._seen.update({pid: table[pid][1] for pid in pids if pid in table})
        return pids

    def sample(self) -> Snapshot:
        """Read every tracked process and update the peaks."""
        rows = []
        for pid in sorted(self.tracked()):
            memory = process_memory(pid, self.pss)
            if memory is not None:
                rows.append((pid, process_kind(command_line(pid)), *memory))
        snap = Snapshot(rows)
        self.samples += 1
        self._update(snap)
        return snap

    def _update(self, snap: Snapshot) -> None:
        headline = snap.pss if snap.pss is not None else snap.rss
        if self.peak is None or headline > (self.peak.pss if self.peak.pss is not None else self.peak.rss):
            self.peak = snap
        self.peak_rss = max(self.peak_rss, snap.rss)
        counts: dict[str, int] = {}
        for _, kind, rss, pss, _shmem in snap.processes:
            counts[kind] = counts.get(kind, 0) + 1
            for name, value in (("rss", rss), ("pss", pss)):
                if value is not None and value > self.largest.get(name, (-1, ""))[0]:
                    self.largest[name] = (value, kind)
                kind_best = self.kind_max.setdefault(kind, {})
                if value is not None and value > kind_best.get(name, -1):
                    kind_best[name] = value
        for kind, n in counts.items():
            self.kind_count_max[kind] = max(n, self.kind_count_max.get(kind, 0))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
        self.cpu_seconds = time.thread_time()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> dict[str, Any]:
        """The peaks, in MiB."""
        peak = self.peak or Snapshot([])
        client = self.kind_max.get("client_actor", {})

        def mib(value: int | None) -> float | None:
            return None if value is None else value / MIB

        return {"peak_pss_mib": mib(peak.pss), "peak_rss_mib": mib(self.peak_rss),
                "rss_at_pss_peak_mib": mib(peak.rss), "shmem_pss_at_peak_mib": mib(peak.shmem),
                "processes_at_peak": len(peak.processes),
                "by_kind_at_peak": peak.by_kind(),
                "largest_process": {k: {"mib": v / MIB, "kind": kind} for k, (v, kind) in self.largest.items()},
                "client_actor_pss_mib": mib(client.get("pss")), "client_actor_rss_mib": mib(client.get("rss")),
                "client_actors_max": self.kind_count_max.get("client_actor", 0),
                "largest_by_kind_mib": {k: {m: v / MIB for m, v in d.items()} for k, d in self.kind_max.items()},
                "samples": self.samples, "interval_s": self.interval, "pss": self.pss,
                "sampler_cpu_seconds": self.cpu_seconds}


# --- the arithmetic ------------------------------------------------------------------------------

def concurrency(num_cpus: int, client_cpus: float) -> int:
    """Clients Ray runs at once: its CPUs over one client's."""
    return max(1, int(num_cpus // client_cpus))


def round_times(summary: dict[str, Any]) -> dict[str, Any]:
    """Round 0's and each later round's seconds, and their mean, from ``summary.json``.

    Uses the ServerApp's cumulative clock at the end of round 0 (``initial``) and of each round;
    without it, the whole ServerApp wall over the rounds (round 0 included, no per-round list).
    """
    rounds, total = summary.get("rounds") or [], float(summary.get("wall_seconds") or 0.0)
    ends = [r.get("wall_seconds") for r in rounds]
    start = (summary.get("initial") or {}).get("wall_seconds")
    if rounds and start is not None and all(e is not None for e in ends):
        per_round = [b - a for a, b in zip([start, *ends[:-1]], ends)]
        return {"initial_seconds": start, "round_seconds": per_round,
                "seconds_per_round": sum(per_round) / len(per_round),
                "round_source": "summary rounds' wall_seconds (cumulative ServerApp clock); round 0 apart"}
    return {"initial_seconds": None, "round_seconds": [], "seconds_per_round": total / max(len(rounds), 1),
            "round_source": "fallback: ServerApp wall_seconds / rounds (round 0 included); "
                            "the summary has no per-round wall_seconds"}


def timings(summary: dict[str, Any], process_seconds: float) -> dict[str, Any]:
    """Seconds per round, round 0, the ServerApp's and the process's wall, and the start-up (the
    process's wall outside the ServerApp) with, when the summary has ``engine_seconds``, its two
    parts: Ray's start and shut-down (``engine_overhead``) and what ``mpdrm-simulate`` does outside
    the engine (``outside_engine``: Hydra, generating and preparing the cohort unless cached)."""
    server = float(summary.get("wall_seconds") or 0.0)
    engine, inside = summary.get("engine_seconds"), summary.get("process_seconds")
    return {**round_times(summary), "rounds": len(summary.get("rounds") or []), "serverapp_seconds": server,
            "process_seconds": process_seconds, "startup_seconds": process_seconds - server,
            "engine_overhead_seconds": None if engine is None else float(engine) - server,
            "outside_engine_seconds": None if engine is None or inside is None else float(inside) - float(engine)}


def fit_line(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least squares ``y = intercept + slope * x`` and its R²; ``None`` under two distinct x."""
    points = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in points)
    ss_tot = sum((y - my) ** 2 for _, y in points)
    return {"intercept": intercept, "slope": slope, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def memory_verdict(slope_mib_per_site: float | None, client_mib: float | None, sites: int | None = None,
                   peak_mib: float | None = None, share: float = TARGET_SHARE) -> dict[str, Any]:
    """Whether memory grows with the active clients, not the sites: at the largest federation
    measured (``sites``, peak ``peak_mib``), the part of the peak that grows with the number of
    sites (``slope x sites``) is under ``share`` of the peak. ``holds`` is ``None`` when a figure
    is missing; one more site's memory over one active client's is reported beside it."""
    known = None not in (slope_mib_per_site, sites, peak_mib) and bool(peak_mib)
    per_sites = slope_mib_per_site * sites / peak_mib if known else None
    client_known = slope_mib_per_site is not None and client_mib is not None and client_mib > 0
    return {"target": TARGET,
            "rule": f"at the largest N, the peak memory's least-squares slope over N (MiB per site) times N "
                    f"< {share:.0%} of the peak",
            "slope_mib_per_site": slope_mib_per_site, "client_mib": client_mib, "share": share,
            "sites": sites, "peak_mib": peak_mib, "sites_share_of_peak": per_sites,
            "slope_over_client": slope_mib_per_site / client_mib if client_known else None,
            "holds": (per_sites < share) if known else None}


def headline(memory: dict[str, Any], key: str) -> float | None:
    """PSS of ``key`` (``peak``/``client``) when measured, else RSS."""
    names = {"peak": ("peak_pss_mib", "peak_rss_mib"), "client": ("client_actor_pss_mib", "client_actor_rss_mib")}[key]
    return next((memory[n] for n in names if memory.get(n) is not None), None)


def growth_by_kind(rows: list[dict[str, Any]]) -> dict[str, float]:
    """MiB per extra site of each kind of process at the memory peak (PSS, else RSS): which
    processes hold the growth."""
    kinds = sorted({k for r in rows for k in r["memory"].get("by_kind_at_peak", {})})
    slopes = {}
    for kind in kinds:
        ys = [r["memory"].get("by_kind_at_peak", {}).get(kind, {}).get("pss_mib", 0.0) for r in rows]
        fit = fit_line([r["sites"] for r in rows], ys)
        if fit:
            slopes[kind] = fit["slope"]
    return dict(sorted(slopes.items(), key=lambda kv: -abs(kv[1])))


def shmem_slope(rows: list[dict[str, Any]]) -> float | None:
    """MiB per extra site of the shared memory (Ray's object store) at the memory peak."""
    values = [r["memory"].get("shmem_pss_at_peak_mib") for r in rows]
    fit = fit_line([r["sites"] for r in rows], values) if None not in values else None
    return fit["slope"] if fit else None


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Slopes per site of peak PSS, peak RSS and seconds per round, the memory ratio of the largest
    N over the smallest, the slope of each kind of process, and the verdict on the target."""
    sites = [r["sites"] for r in rows]
    pss = [r["memory"]["peak_pss_mib"] for r in rows]
    rss = [r["memory"]["peak_rss_mib"] for r in rows]
    peaks = [headline(r["memory"], "peak") for r in rows]
    clients = sorted(c for c in (headline(r["memory"], "client") for r in rows) if c is not None)
    client = clients[len(clients) // 2] if clients else None  # the median over the runs
    fits = {"memory_pss_mib": fit_line(sites, pss) if None not in pss else None,
            "memory_rss_mib": fit_line(sites, rss),
            "seconds_per_round": fit_line(sites, [r["seconds_per_round"] for r in rows])}
    fit = fits["memory_pss_mib"] or fits["memory_rss_mib"]
    small, large = min(range(len(rows)), key=sites.__getitem__), max(range(len(rows)), key=sites.__getitem__)
    return {"fits": fits, "memory": "PSS" if fits["memory_pss_mib"] else "RSS",
            "memory_ratio": {"sites": [sites[small], sites[large]],
                             "ratio": peaks[large] / peaks[small] if peaks[small] else None},
            "by_kind_mib_per_site": growth_by_kind(rows), "shmem_mib_per_site": shmem_slope(rows),
            "verdict": memory_verdict(fit["slope"] if fit else None, client, sites[large], peaks[large])}


def row(sites: int, measured: dict[str, Any], summary: dict[str, Any], active: int) -> dict[str, Any]:
    """The figures of one run."""
    return {"sites": sites, "concurrency": active, **timings(summary, measured["process_seconds"]),
            "memory": measured["memory"], "run_dir": measured["run_dir"]}


def _num(x: Any, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


HEAD = ["sites", "active", "s/round", "round 0 s", "ServerApp s", "process s", "start-up s",
        "peak PSS MiB", "peak RSS MiB", "client MiB", "procs at peak", "largest process MiB"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line of cells per run (the columns of ``HEAD``)."""
    out = []
    for r in rows:
        m = r["memory"]
        big = m["largest_process"].get("pss" if m.get("peak_pss_mib") is not None else "rss", {})
        out.append([str(r["sites"]), str(r["concurrency"]), _num(r["seconds_per_round"], 2), _num(r["initial_seconds"]),
                    _num(r["serverapp_seconds"]), _num(r["process_seconds"]), _num(r["startup_seconds"]),
                    _num(m["peak_pss_mib"], 0), _num(m["peak_rss_mib"], 0), _num(headline(m, "client"), 0),
                    str(m["processes_at_peak"]), f"{_num(big.get('mib'), 0)} ({big.get('kind', '?')})"])
    return out


def growth_lines(g: dict[str, Any]) -> list[str]:
    """The slopes, the ratio and the verdict in words."""
    f, v, ratio = g["fits"], g["verdict"], g["memory_ratio"]
    mem = f["memory_pss_mib"] or f["memory_rss_mib"]
    lines = [f"Peak {g['memory']}: {_num(mem and mem['intercept'], 0)} MiB + {_num(mem and mem['slope'], 2)} MiB per "
             f"site (R² {_num(mem and mem['r2'], 2)}); peak at {ratio['sites'][1]} sites / at {ratio['sites'][0]}: "
             f"{_num(ratio['ratio'], 2)}x.",
             f"Seconds per round: {_num(f['seconds_per_round'] and f['seconds_per_round']['intercept'], 2)} + "
             f"{_num(f['seconds_per_round'] and f['seconds_per_round']['slope'], 3)} s per site.",
             f"Target ({v['target']}): {'holds' if v['holds'] else 'missed' if v['holds'] is False else 'unknown'}: "
             f"{_num(v['slope_mib_per_site'], 2)} MiB per extra site x {v['sites']} sites is "
             f"{_num(v['sites_share_of_peak'] and 100 * v['sites_share_of_peak'], 1)} % of the peak (rule: {v['rule']}); "
             f"one more site is {_num(v['slope_over_client'] and 100 * v['slope_over_client'], 1)} % of one active "
             f"client's {_num(v['client_mib'], 0)} MiB."]
    if g.get("by_kind_mib_per_site"):
        lines.append("MiB per extra site by process kind, at the peak: "
                     + ", ".join(f"{k} {s:+.2f}" for k, s in g["by_kind_mib_per_site"].items())
                     + f"; of which shared memory (Ray's object store): {_num(g.get('shmem_mib_per_site'), 2)}.")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table with the growth lines."""
    rows = table_rows(report["rows"])
    lines = ["# Scale: seconds per round and peak memory against the number of sites", "",
             f"Per site: {report['per_site']}. Memory: every process of the run (mpdrm-simulate and its "
             "descendants: engine, Ray GCS/raylet/agents, workers, ClientApp actors), summed; PSS divides shared "
             "pages among the processes that map them.", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD), *("| " + " | ".join(r) + " |" for r in rows),
             "", *growth_lines(report["growth"]), "", f"Round times: {report['rows'][0]['round_source']}."]
    return "\n".join(lines) + "\n"


def printed_table(rows: list[dict[str, Any]]) -> str:
    """The table for the console."""
    cells = [HEAD, *table_rows(rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


# --- running -------------------------------------------------------------------------------------

def overrides(args: argparse.Namespace, sites: int, run_dir: Path) -> list[str]:
    """The Hydra overrides of one run: the same cohort and work per site at every N."""
    return [f"sites={sites}", f"rounds={args.rounds}", f"data.synth.subjects={args.subjects}",
            f"data.synth.visits={args.visits}", f"data.synth.seconds={args.seconds}", "data.prepare_workers=1",
            "train.epochs=1", f"model.image_size={args.image_size}", "prepare.max_clips=2",
            f"resources.num_cpus={args.num_cpus}", f"resources.client_cpus={args.client_cpus}",
            f"seed={args.seed}", f"run_dir={run_dir}"]


def finished(run_dir: Path, wanted: list[str]) -> dict[str, Any] | None:
    """The stored measurement of a run that finished with the ``wanted`` overrides."""
    path = run_dir / MEASURE_FILE
    if not (path.is_file() and (run_dir / "summary.json").is_file()):
        return None
    measured = json.loads(path.read_text())
    return measured if measured.get("overrides") == wanted else None


def measure(args: argparse.Namespace, sites: int) -> dict[str, Any]:
    """Run ``mpdrm-simulate`` for ``sites`` sites under the tree sampler (or reuse its measurement)."""
    run_dir = args.work / f"sites-{sites}"
    wanted = overrides(args, sites, run_dir)
    done = finished(run_dir, wanted)
    if done is not None:
        print(f"reusing {run_dir}", flush=True)
        return done
    shutil.rmtree(run_dir, ignore_errors=True)  # no earlier run's site state
    run_dir.mkdir(parents=True)
    env = {**os.environ, "FEDMPDRM_CACHE": str(args.work / "cache")}
    log = run_dir / "scale.log"
    print(f"running {sites} sites -> {run_dir}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "simulations.simulate", *wanted], cwd=ROOT, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        with TreeSampler(child.pid, args.interval, pss=not args.no_pss) as sampler:
            returncode = child.wait()
    seconds = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"run {run_dir} failed (exit {returncode}):\n{log.read_text()[-3000:]}")
    measured = {"overrides": wanted, "sites": sites, "process_seconds": seconds, "memory": sampler.result(),
                "run_dir": str(run_dir)}
    (run_dir / MEASURE_FILE).write_text(json.dumps(measured, indent=2) + "\n")
    if not args.keep_state:
        drop_state(run_dir)
    return measured


def drop_state(run_dir: Path) -> None:
    """Remove what only a resumed run would read (sites' state, about 70 MB per site here, and the
    checkpoint); the summary, logs and measurement stay."""
    shutil.rmtree(run_dir / "site-state", ignore_errors=True)
    for checkpoint in run_dir.glob("checkpoint*.safetensors"):
        checkpoint.unlink()


def plot(rows: list[dict[str, Any]], g: dict[str, Any], path: Path) -> bool:
    """Peak memory and seconds per round against N, with the fitted lines (``False``: no matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sites = [r["sites"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("peak_pss_mib", "peak PSS"), ("peak_rss_mib", "peak RSS")):
        values = [r["memory"][key] for r in rows]
        if None not in values:
            left.plot(sites, values, "o-", label=label)
    right.plot(sites, [r["seconds_per_round"] for r in rows], "o-", label="measured")
    for axis, fit, unit in ((left, g["fits"]["memory_pss_mib"] or g["fits"]["memory_rss_mib"], "MiB"),
                            (right, g["fits"]["seconds_per_round"], "s")):
        if fit:
            axis.plot(sites, [fit["intercept"] + fit["slope"] * n for n in sites], "--", color="grey",
                      label=f"fit: {fit['slope']:.3g} {unit} per site")
        axis.set_xlabel("simulated sites")
        axis.legend()
    left.set_ylabel("MiB (whole process tree)")
    right.set_ylabel("seconds per round")
    fig.suptitle(f"{rows[0]['concurrency']} clients active at once")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` shrinks the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2, 4 and 8 sites, 2 rounds")
    parser.add_argument("--sites", type=int, nargs="+", default=list(FULL_SITES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=2, help="per site: one trains, one is held out")
    parser.add_argument("--visits", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.5, help="video length: one 16-frame clip at 15 fps")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray's CPUs (resources.num_cpus)")
    parser.add_argument("--client-cpus", type=float, default=1.0, help="CPUs per ClientApp (resources.client_cpus)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--no-pss", action="store_true", help="RSS only (/proc/<pid>/status; cheaper)")
    parser.add_argument("--keep-state", action="store_true", help="keep the sites' state and the checkpoint "
                        "(about 70 MB per site; removed after measuring by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.rounds = list(QUICK_SITES), 2
    quick_paths(args, DEFAULT_WORK, DEFAULT_OUT)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every N, print the table, write the JSON, the markdown table and the plot."""
    args = parse(argv)

    started, active = time.perf_counter(), concurrency(args.num_cpus, args.client_cpus)
    rows = []
    for sites in sorted(set(args.sites)):
        measured = measure(args, sites)
        summary = json.loads((Path(measured["run_dir"]) / "summary.json").read_text())
        rows.append(row(sites, measured, summary, active))
    g = growth(rows)
    report = {"benchmark": "scale", "args": {k: str(v) for k, v in vars(args).items()},
              "per_site": f"{args.subjects} subjects x {args.visits} visit(s) of {args.seconds} s, "
                          f"{args.image_size} px, 1 epoch, model tiny, {args.rounds} rounds",
              "concurrency": {"active_clients": active, "num_cpus": args.num_cpus, "client_cpus": args.client_cpus},
              "memory_unit": "MiB", "rows": rows, "growth": g, "wall_seconds": time.perf_counter() - started}
    print(printed_table(rows))
    print("\n".join(growth_lines(g)))
    write_report(args.out, report)
    args.out.with_suffix(".md").write_text(markdown(report))
    if plot(rows, g, args.out.with_suffix(".png")):
        print(f"wrote {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
