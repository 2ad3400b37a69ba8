"""The driver of the fault-injection harness: runs a :class:`~tests.faults.scripts.Script`
over real processes and records what happened.

Two federations: :class:`DeployedFederation` (a running ``Deployment`` of
``tests/deployment/deploylib``: SuperLink + SuperNodes over TLS on 127.0.0.1, runs
started with ``flwr run``) and :class:`SimulatedFederation` (``mpdrm-simulate``, Flower's
Ray simulation, every process of a run marked with its own token). :func:`run_script`
starts the run, waits for each fault's moment while polling a
:class:`~tests.faults.watch.Watcher`, injects the fault, waits for the run to end and
returns a :class:`Record` for :mod:`tests.faults.verdicts`.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpdrm import tensorfile
from server.checkpoint import CHECKPOINT_FILE, PREV_CHECKPOINT_FILE, load_checkpoint
from simulations.processes import TOKEN_ENV, processes_with_token
from tests.deployment.deploylib import procs
from tests.deployment.deploylib.harness import Deployment
from tests.deployment.deploylib.tiny import TINY_RUN
from tests.faults.scripts import Fault, Script, When
from tests.faults.small_disk import SmallDisk
from tests.faults.watch import Event, Watcher

REPO = Path(__file__).resolve().parents[2]

#: Longest wait for one fault's moment or for a run's end (a loaded 2-core machine).
WAIT = 900.0


@dataclass
class Injection:
    """A fault as injected.

    Attributes
    ----------
    fault : Fault
    at : float
        ``time.monotonic()`` when it was injected.
    note : str
        What was done.
    before : dict
        ``summary.json`` just before (``{}`` when none yet).
    weights : dict or None
        The shared weights of the run's checkpoint just before (``None`` when none yet).
    seen : object
        What its moment's predicate returned (e.g. the ended run's status).
    checkpointed : int
        The round of the newest readable checkpoint just before (current or previous file).
    """

    fault: Fault
    at: float
    note: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] | None = None
    seen: Any = None
    checkpointed: int = 0


@dataclass
class Record:
    """Everything a finished script leaves for its verdicts.

    Attributes
    ----------
    script : Script
    injections : list of Injection
        One per fault, in order.
    watcher : Watcher
        Its events.
    run_dir : Path
        The faulted run's folder.
    status : str
        How the last run ended (``finished:completed``, ``exit 0``, ...).
    logs : str
        The coordinator's output of every run of the script (ServerApp logs / simulation).
    reference : dict or None
        Final shared weights of the same federation without faults.
    started : float
        ``time.monotonic()`` when the faulted run was started.
    wall : float
        Seconds from the faulted run's start to its end.
    site_logs : dict
        Site label -> its SuperNode logs (deployment; a ClientApp's log lines are there).
    restarts : dict
        Site label -> (when its new SuperNode started, its pid or the error).
    """

    script: Script
    injections: list[Injection]
    watcher: Watcher
    run_dir: Path
    status: str = ""
    logs: str = ""
    reference: dict[str, np.ndarray] | None = None
    started: float = 0.0
    wall: float = 0.0
    site_logs: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The faulted run's final ``summary.json``."""
        return read_json(self.run_dir / "summary.json")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's content, ``{}`` when missing."""
    return json.loads(path.read_text()) if path.is_file() else {}


def shared_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The final shared weights in a run's checkpoint."""
    return load_checkpoint(run_dir).arrays


def checkpoint_weights(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The shared weights of the run's current checkpoint file, ``None`` if none is readable."""
    try:
        return {k: np.asarray(v) for k, v in tensorfile.load(Path(run_dir) / CHECKPOINT_FILE)["arrays"].items()}
    except Exception:  # noqa: BLE001 (none yet, or truncated on purpose)
        return None


def durable_round(run_dir: Path) -> int:
    """The round a resume would start after: the current checkpoint's, else the previous
    one's, else 0."""
    for name in (CHECKPOINT_FILE, PREV_CHECKPOINT_FILE):
        try:
            return int(tensorfile.load(Path(run_dir) / name)["round"])
        except Exception:  # noqa: BLE001 (missing or damaged)
            continue
    return 0


def truncate(path: Path) -> int:
    """Cut a file to half its size (a torn write); returns the new size."""
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return len(blob) // 2


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- deployment
class DeployedFederation:
    """A script's runs on a started :class:`Deployment` (its sites are the script's).

    Parameters
    ----------
    dep : Deployment
        SuperLink and SuperNodes already running (``start_federation``).
    script : Script
    run_dir : Path
        The run folder of this script's runs.
    """

    def __init__(self, dep: Deployment, script: Script, run_dir: Path) -> None:
        self.dep, self.script, self.run_dir = dep, script, Path(run_dir)
        self.config = {**TINY_RUN, **script.config, "run-dir": str(self.run_dir)}
        self.watcher = Watcher(self._site_logs, {s: dep.sites[s].state_dir for s in script.sites}, self.run_dir)
        self.run_ids: list[int] = []
        self.held: list[int] = []
        self.threads: list[threading.Thread] = []
        self.restarts: dict[str, tuple[float, int | str]] = {}
        self._asked = float("-inf")

    def _site_logs(self, site: str) -> str:
        files = sorted(self.dep.logs.glob(f"supernode-{site}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return "".join(p.read_text(errors="replace") for p in files)

    def reset_sites(self) -> None:
        """A new federation: every site's SuperNode running (one killed by an earlier script
        is restarted), no ClientApp of an earlier run left (one held through a failed run
        goes on once released and saves its state) and no private state left.

        A leftover ClientApp is waited for, not killed: a SuperNode whose ClientApp was
        killed mid-message took no further message (seen with Flower 1.42).
        """
        for site in self.script.sites:
            if not self.dep.sites[site].proc.alive():
                self._restart_when_offline(site)
        for site in self.script.sites:
            procs.wait_for(lambda site=site: not self.dep.clientapp_pids(site), 300,
                           f"the ClientApps of {site}'s earlier run to end", interval=0.5, on_fail=self.dep.all_logs)
            for path in self.dep.sites[site].state_dir.glob("*"):
                if path.is_file():
                    path.unlink()

    def launch(self, resume: bool = False, overrides: dict[str, Any] | None = None) -> None:
        """``flwr run`` this script's app config (``resume=true`` continues ``run_dir``)."""
        config = {**self.config, **(overrides or {}), "resume": resume}
        first = load_checkpoint(self.run_dir).round + 1 if resume else 1
        self.watcher.new_segment(first, not resume and float(config["fraction-evaluate"]) > 0)
        self.run_ids.append(self.dep.run(REPO, config))

    def ended(self) -> str:
        """The last run's final status, ``""`` while it runs (``flwr ls`` at most every 3 s)."""
        if self.dep.serverapp_running() or time.monotonic() - self._asked < 3:
            return ""
        self._asked = time.monotonic()
        status = str(self.dep.run_status(self.run_ids[-1]).get("status", ""))
        return status if status.startswith("finished") else ""

    def site_logs(self) -> dict[str, str]:
        """Site label -> its SuperNode logs."""
        return {site: self._site_logs(site) for site in self.script.sites}

    def logs(self) -> str:
        """The ServerApp log of every run of the script."""
        return "\n".join(self.dep.run_log(run_id) for run_id in self.run_ids)

    def clientapp(self, site: str, since: float) -> list[int]:
        """The ClientApp of the site's newest message and its children; waits for it.

        It started after the site's previous reply (seen at most a poll late: 2 s of
        margin), unlike the previous message's ClientApp, which may still be exiting and
        started earlier by its whole run (imports alone take seconds).
        """
        after = self.watcher.previous_reply(site, since) - 2.0

        def fresh() -> list[int]:
            return sorted(p for p in self.dep.clientapp_pids(site) if (procs.started_at(p) or 0.0) >= after)
        pids = procs.wait_for(fresh, 120, f"a new ClientApp of {site}", interval=0.1, on_fail=self.dep.all_logs)
        return [p for pid in pids for p in (pid, *procs.descendants(pid))]

    # ------------------------------------------------------------------ actions
    def kill_site(self, fault: Fault, since: float) -> str:
        pids = self.clientapp(fault.target, since)
        self.dep.kill_site(fault.target)
        return f"SIGKILL of the SuperNode tree (ClientApp pid {pids[0]})"

    def restart_site(self, fault: Fault, since: float) -> str:
        thread = threading.Thread(target=self._restart_when_offline, args=(fault.target,), daemon=True)
        thread.start()
        self.threads.append(thread)
        return "restart once the SuperLink counts its node offline (same key and state-dir)"

    def node_id(self, site: str) -> str:
        """The site's node id, as its SuperNode logged it."""
        found = re.findall(r"SuperNode ID: (\d+)", self._site_logs(site))
        return found[-1] if found else ""

    def _restart_when_offline(self, site: str) -> None:
        node = self.node_id(site)

        def offline() -> bool:
            return any(n.get("node-id") == node and n.get("status") != "online" for n in self.dep.nodes())
        try:
            procs.wait_for(offline, 180, f"the SuperLink to count {site} (node {node}) offline", interval=4)
            old = self.dep.sites[site]
            entry = self.dep.start_supernode(site, old.data_path, old.state_dir,
                                             node_config={"site-id": self.script.sites.index(site) + 1})
            self.restarts[site] = (time.monotonic(), entry.proc.pid)
        except Exception as error:  # noqa: BLE001 (reported by the verdict)
            self.restarts[site] = (time.monotonic(), repr(error))

    def silence_site(self, fault: Fault, since: float) -> str:
        """SIGSTOP of everything under the SuperNode (its SuperExec and ClientApps), not of
        the SuperNode itself: it keeps its heartbeats (connected) and never answers. Stopping
        only the ClientApp is not enough: Flower relaunches a task whose process stops
        sending task heartbeats, and the relaunched ClientApp answers."""
        pids: list[int] = []
        for _ in range(2):  # again: a ClientApp being started while the tree was read
            new = [p for p in self.dep.sites[fault.target].proc.tree() if p not in pids]
            _signal(new, signal.SIGSTOP)
            pids += new
            time.sleep(0.5)
        self.held.extend(pids)
        return f"SIGSTOP of the SuperExec and ClientApps under SuperNode pid {self.dep.sites[fault.target].proc.pid}"

    hold_site = delay_site = silence_site

    def release_site(self, fault: Fault, since: float) -> str:
        """SIGCONT of what ``silence-site`` / ``hold-site`` stopped."""
        self.release()
        return "SIGCONT"

    def release(self) -> None:
        """Continue every held ClientApp; wait for pending restarts."""
        _signal(self.held, signal.SIGCONT)
        self.held.clear()
        for thread in self.threads:
            thread.join(timeout=200)

    def truncate_state(self, fault: Fault, since: float) -> str:
        path = self.dep.sites[fault.target].state_dir / "site_state.safetensors"
        return f"{path.name} cut to {truncate(path)} bytes"

    def kill_coordinator(self, fault: Fault, since: float) -> str:
        self.dep.superlink.stop(sig=signal.SIGKILL, grace=5)
        self.dep.others.append(self.dep.superlink)
        return "SIGKILL of the SuperLink tree (SuperLink, SuperExec, ServerApp)"

    def restart_coordinator(self, fault: Fault, since: float) -> str:
        self.dep.start_superlink()
        return f"new SuperLink pid {self.dep.superlink.pid}, same database and port"

    def resume(self, fault: Fault, since: float) -> str:
        self.launch(resume=True, overrides=fault.options)
        return f"flwr run resume=true, run {self.run_ids[-1]}"

    def truncate_checkpoint(self, fault: Fault, since: float) -> str:
        return f"{CHECKPOINT_FILE} cut to {truncate(self.run_dir / CHECKPOINT_FILE)} bytes"


# --------------------------------------------------------------------------- simulation
class SimulatedFederation:
    """A script's runs through ``mpdrm-simulate`` (Flower's Ray simulation).

    Parameters
    ----------
    script : Script
    cohort : Path
        A prepared cohort of the script's sites.
    run_dir : Path
        The run folder.
    overrides : list of str
        Hydra overrides of every run (a tiny model).
    disk : SmallDisk, optional
        A started small disk mounted over ``run_dir`` (its ``site-state`` kept on the real
        disk): the runs start inside its namespace and ``run_dir`` is read through it.
    """

    def __init__(self, script: Script, cohort: Path, run_dir: Path, overrides: list[str],
                 disk: SmallDisk | None = None) -> None:
        self.script, self.cohort, self.disk = script, Path(cohort), disk
        self.inner = Path(run_dir)  # the run folder as the run sees it
        self.run_dir = disk.outside(self.inner) if disk is not None else self.inner
        extra = [f"{k}={v}" for k, v in script.config.items()]
        self.args = [f"cohort={cohort}", f"run_dir={run_dir}", "resources.client_cpus=2", "resources.num_cpus=2",
                     *overrides, *extra]
        state = Path(disk.keep["site-state"]) if disk is not None else self.run_dir / "site-state"
        self.watcher = Watcher(None, {s: state / s for s in script.sites}, self.run_dir)
        self.token = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | None = None
        self.outputs: list[Path] = []

    def launch(self, resume: bool = False, overrides: dict[str, Any] | None = None) -> None:
        """Start ``mpdrm-simulate`` (``resume=true`` continues ``run_dir``)."""
        first = load_checkpoint(self.run_dir).round + 1 if resume else 1
        self.watcher.new_segment(first, False)
        log = self.inner.parent / f"{self.inner.name}-{len(self.outputs)}.log"
        self.outputs.append(log)
        argv = [str(Path(sys.executable).with_name("mpdrm-simulate")), *self.args, f"resume={str(resume).lower()}",
                *(f"{k}={v}" for k, v in (overrides or {}).items())]
        if self.disk is not None:
            argv = self.disk.command(argv, cwd=self.inner.parent)
        env = {**os.environ, TOKEN_ENV: self.token, "FLWR_TELEMETRY_ENABLED": "0"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.inner.parent, start_new_session=True)

    def ended(self) -> str:
        """``exit N`` once the run's process exited, ``""`` while it runs."""
        code = self.proc.poll() if self.proc is not None else None
        return "" if code is None else f"exit {code}"

    def logs(self) -> str:
        """The output of every run of the script."""
        return "\n".join(p.read_text(errors="replace") for p in self.outputs if p.is_file())

    def release(self) -> None:
        """Nothing is ever held in a simulation."""

    def site_logs(self) -> dict[str, str]:
        """No per-site logs in a simulation."""
        return {}

    def kill_coordinator(self, fault: Fault, since: float) -> str:
        pids = processes_with_token(self.token)
        _signal(pids, signal.SIGKILL)
        procs.wait_for(lambda: not processes_with_token(self.token), 60, "the killed simulation's processes to go")
        self.proc.wait(timeout=30)
        return f"SIGKILL of all {len(pids)} processes of the run (driver, Ray, workers)"

    def resume(self, fault: Fault, since: float) -> str:
        self.launch(resume=True, overrides=fault.options)
        return "mpdrm-simulate resume=true"

    def fill_disk(self, fault: Fault, since: float) -> str:
        assert self.disk is not None, f"{self.script.name}: fill-disk needs a SmallDisk"
        return f"{self.disk.fill()} bytes written: {self.disk.size}-byte disk full"

    def free_disk(self, fault: Fault, since: float) -> str:
        assert self.disk is not None, f"{self.script.name}: free-disk needs a SmallDisk"
        self.disk.free()
        return "the file that filled it deleted"

    def close(self) -> list[int]:
        """Kill whatever of the script is still running (and end its disk's namespace);
        returns the pids found."""
        pids = processes_with_token(self.token)
        _signal(pids, signal.SIGKILL)
        if self.disk is not None:
            self.disk.close()
        return pids


# --------------------------------------------------------------------------- the script
Federation = DeployedFederation | SimulatedFederation


def wait_until(fed: Federation, done: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll the federation's watcher until ``done()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        fed.watcher.poll()
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{fed.script.name}: timed out after {timeout:.0f} s waiting for {what}\n"
                               f"{fed.logs()[-4000:]}")
        time.sleep(0.2)


def moment(fed: Federation, fault: Fault) -> Callable[[], Any]:
    """The predicate of a fault's :class:`When`."""
    when: When = fault.when
    if when.event == "now":
        return lambda: True
    if when.event == "ended":
        return fed.ended
    if when.event == "saved":
        return lambda: fed.watcher.find("saved", when.site, rnd=when.round)
    who = when.site or fault.target
    return lambda: fed.watcher.find(when.event, who, when.stage, when.round)


def before_the_end(fed: Federation, done: Callable[[], Any], what: str) -> Callable[[], Any]:
    """``done``, failing at once (with the run's log) when the run ended before it came: a
    moment that can no longer come is not waited for until :data:`WAIT`."""
    def check() -> Any:
        value = done()
        if value:
            return value
        status = fed.ended()
        if status:
            fed.watcher.poll()  # what happened just before the end
            value = done()
            if not value:
                raise AssertionError(f"{fed.script.name}: the run ended ({status}) before {what}\n"
                                     f"{fed.logs()[-4000:]}")
        return value
    return check


def inject(fed: Federation, fault: Fault) -> Injection:
    """Wait for the fault's moment, then do it (``summary.json`` is read just before)."""
    what = f"the moment of '{fault.describe()}'"
    done = moment(fed, fault)
    if fault.when.event not in ("now", "ended"):
        done = before_the_end(fed, done, what)
    seen = wait_until(fed, done, what)
    before, weights, checkpointed = read_json(fed.run_dir / "summary.json"), checkpoint_weights(fed.run_dir), \
        durable_round(fed.run_dir)
    at = time.monotonic()
    since = seen.at if isinstance(seen, Event) else at
    note = getattr(fed, fault.action.replace("-", "_"))(fault, since)
    return Injection(fault, at, note, before, weights, seen, checkpointed)


def run_reference(fed: Federation) -> dict[str, np.ndarray]:
    """The script's federation without faults, to the end; its final shared weights."""
    fed.launch()
    status = wait_until(fed, fed.ended, "the reference run to end")
    if status not in ("finished:completed", "exit 0"):
        raise AssertionError(f"{fed.script.name}: the reference run ended {status}\n{fed.logs()[-4000:]}")
    return shared_weights(fed.run_dir)


def run_script(fed: Federation) -> Record:
    """Run the script's faulted federation; the :class:`Record` of what happened."""
    start = time.monotonic()
    record = Record(fed.script, [], fed.watcher, fed.run_dir, started=start)
    fed.launch()
    try:
        for fault in fed.script.faults:
            record.injections.append(inject(fed, fault))
        record.status = wait_until(fed, fed.ended, "the run to end")
    finally:
        fed.release()
    fed.watcher.poll()
    record.logs, record.wall, record.site_logs = fed.logs(), time.monotonic() - start, fed.site_logs()
    record.restarts = dict(getattr(fed, "restarts", {}))
    return record
