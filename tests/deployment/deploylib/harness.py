"""A whole deployment on 127.0.0.1: SuperLink, SuperNodes and the ``flwr`` CLI, in tmp_path.

Everything goes through Flower's real commands (``flower-superlink``, ``flower-supernode``,
``flwr supernode register``, ``flwr run``, ``flwr ls``, ``flwr log``), ``mpdrm-deploy``,
``mpdrm-superlink`` (Flower's SuperLink with a longer SQLite busy timeout, as the deployment
guide starts it) and ``mpdrm-supernode`` (Flower's SuperNode with a shorter heartbeat, where a
test waits for a killed site to be counted offline).
:meth:`Deployment.close` stops every process it started, by pid, and reports leftovers.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from server import certs

from . import procs
from .tap import TlsTap

BIN = Path(sys.executable).parent
"""The virtual environment's bin folder (flower-superlink, flwr, ... live there)."""

CONNECTION = "mpdrm-test"
"""Name of the SuperLink connection written to the private FLWR_HOME."""

REPO = Path(__file__).resolve().parents[3]
"""The repository: the Flower app the deployment tests run."""


def app_run_config(overrides: Mapping[str, object] | None = None, app_dir: Path = REPO) -> dict:
    """The run config a deployed ClientApp sees: the app's ``[tool.flwr.app.config]``,
    flattened as Flower does, under ``overrides`` (``flwr run --run-config``)."""
    tree = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

    def flat(d: Mapping[str, object], prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
        return out
    return {**flat(tree), **dict(overrides or {})}


def prepare_site_data(site_dir: Path, run_config: Mapping[str, object] | None = None, *,
                      timeout: float = 600) -> str:
    """Prepare a site folder as a hospital does before starting its SuperNode:
    ``mpdrm-data prepare SITE_DIR`` with the options that give the run's ``prepare.*``
    preprocessing (the ClientApp only loads prepared data). Returns the command's output.

    Parameters
    ----------
    site_dir : Path
        The site folder (``data-path`` of its SuperNode).
    run_config : Mapping, optional
        Run-config overrides the run will be started with (over the app's defaults).
    """
    from mpdrm.contract.site_data import prepare_config  # the app's own reading of prepare.*
    from mpdrm.data.dataset import prepare_command

    cfg = prepare_config(app_run_config(run_config))
    argv = shlex.split(prepare_command(site_dir, cfg))
    res = subprocess.run([str(BIN / argv[0]), *argv[1:], "--quiet"], capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res.stdout


def base_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process: offline, no telemetry, private FLWR_HOME."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _last_json(text: str) -> dict:
    """The last top-level JSON object printed in ``text`` (flwr --format json output)."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in output:\n{text}")
    decoder = json.JSONDecoder()
    last = None
    idx = start
    while idx >= 0:
        try:
            obj, end = decoder.raw_decode(text, idx)
            last = obj
            idx = text.find("{", end)
        except json.JSONDecodeError:
            idx = text.find("{", idx + 1)
    if last is None:
        raise ValueError(f"no JSON object in output:\n{text}")
    return last


@dataclass
class Site:
    """One started site: its SuperNode process, folders and optional tap."""

    name: str
    proc: procs.Proc
    data_path: Path
    state_dir: Path
    tap: TlsTap | None = None


class Deployment:
    """Coordinator + sites on loopback, rooted in one temporary folder.

    Parameters
    ----------
    root : Path
        Working folder (pytest's tmp_path); keys, logs, FLWR_HOME and database go here.
    num_site_keys : int
        How many site key pairs to generate (``site-01`` ...).
    heartbeat_interval : float, optional
        Sites run ``mpdrm-supernode --heartbeat-interval`` this many seconds (a killed site
        is counted offline after two); None: Flower's ``flower-supernode`` (30 s).
    """

    def __init__(self, root: Path, num_site_keys: int = 3, heartbeat_interval: float | None = None) -> None:
        self.root = Path(root)
        self.heartbeat_interval = heartbeat_interval
        self.logs = self.root / "logs"
        self.flwr_home = self.root / "flwr-home"
        self.env = base_env(self.flwr_home)
        self.keys = certs.write_bundle(self.root / "keys", num_site_keys)
        self.site_keys = {s.name: s for s in self.keys.sites}
        self.port = procs.free_port()
        self.database = self.root / "superlink.db"
        self.superlink: procs.Proc | None = None
        self.sites: dict[str, Site] = {}
        self.others: list[procs.Proc] = []
        self.taps: list[TlsTap] = []
        self._counter = 0

    # ------------------------------------------------------------------ CLI
    def cli(self, *args: str, timeout: float = 60, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (``flwr ...``, ``mpdrm-deploy ...``) with the deployment's env."""
        argv = [str(BIN / args[0]), *args[1:]]
        res = subprocess.run(argv, env=self.env, cwd=cwd, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
            )
        return res

    def write_connection(self) -> None:
        """Add the TLS connection to $FLWR_HOME/config.toml via ``mpdrm-deploy connection``."""
        self.cli("mpdrm-deploy", "connection", CONNECTION, "--address",
                 f"127.0.0.1:{self.port}", "--root-certificates", str(self.keys.ca_cert),
                 "--default")

    # ------------------------------------------------------------ SuperLink
    def start_superlink(self, *, tls: bool = True, auth: bool = True, timeout: float = 60,
                        busy_timeout: float | None = 60.0) -> procs.Proc:
        """Start the SuperLink (TLS, SuperNode auth, SQLite database) and wait for it:
        ``mpdrm-superlink --sqlite-busy-timeout busy_timeout``, as the deployment guide
        says, or Flower's ``flower-superlink`` (5 s) with ``busy_timeout=None``."""
        argv = ([str(BIN / "flower-superlink")] if busy_timeout is None else
                [str(BIN / "mpdrm-superlink"), "--sqlite-busy-timeout", str(busy_timeout)])
        argv += ["--port", str(self.port),
                 "--database", str(self.database), "--disable-runtime-dependency-installation"]
        if tls:
            argv += ["--ssl-ca-certfile", str(self.keys.ca_cert),
                     "--ssl-certfile", str(self.keys.server_cert),
                     "--ssl-keyfile", str(self.keys.server_key)]
        else:
            argv += ["--insecure"]
        if auth:
            argv += ["--enable-supernode-auth"]
        # a restarted SuperLink (same database) logs into a new file: the first one is kept
        log = self.logs / ("superlink.log" if self.superlink is None else f"superlink-{self._counter + 1}.log")
        self._counter += self.superlink is not None
        self.superlink = procs.start("superlink", argv, log, self.env)
        procs.wait_for(
            lambda: ("Uvicorn running" in self.superlink.log()) or not self.superlink.alive(),
            timeout, "the SuperLink to listen", on_fail=self.superlink.log,
        )
        if not self.superlink.alive():
            raise RuntimeError(f"SuperLink exited:\n{self.superlink.log()}")
        self.write_connection()
        return self.superlink

    def register(self, site: str) -> int:
        """``flwr supernode register`` the site's public key; returns the node id."""
        res = self.cli("flwr", "supernode", "register", str(self.site_keys[site].public_key),
                       CONNECTION, "--name", site, "--format", "json")
        return int(_last_json(res.stdout)["node-id"])

    def heartbeat_intervals(self) -> dict[int, float]:
        """Each node's heartbeat interval as the SuperLink recorded it (its SQLite database)."""
        with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT node_id, heartbeat_interval FROM node WHERE status = 'online'")
            return {int(node): float(interval) for node, interval in rows}

    def nodes(self) -> list[dict]:
        """``flwr supernode ls`` as a list of dicts."""
        res = self.cli("flwr", "supernode", "ls", CONNECTION, "--format", "json")
        data = _last_json(res.stdout)
        return list(data.get("nodes", []))

    def wait_online(self, count: int, timeout: float = 60) -> list[dict]:
        """Wait until ``count`` SuperNodes are online."""
        def online() -> list[dict]:
            nodes = [n for n in self.nodes() if n.get("status") == "online"]
            return nodes if len(nodes) >= count else []
        return procs.wait_for(online, timeout, f"{count} online SuperNodes", interval=2,
                              on_fail=self.all_logs)

    def start_federation(self, cohort: Path, state_root: Path, sites: Sequence[str], *,
                         tap: bool = False) -> None:
        """Start the SuperLink, register every site and start its SuperNode on its cohort
        folder (``site-id`` = 1-based position in ``sites``); wait until all are online."""
        self.start_superlink()
        for site_id, name in enumerate(sites, start=1):
            self.register(name)
            self.start_supernode(name, Path(cohort) / name, Path(state_root) / name, tap=tap,
                                 node_config={"site-id": site_id})
        self.wait_online(len(sites))

    # ------------------------------------------------------------ SuperNodes
    def add_tap(self, name: str) -> TlsTap:
        """A recording TLS relay in front of the SuperLink for one site."""
        tap = TlsTap(self.port, procs.free_port(), self.keys.server_cert, self.keys.server_key,
                     self.keys.ca_cert, self.root / "taps" / name).start()
        self.taps.append(tap)
        return tap

    def start_supernode(
        self, site: str, data_path: Path, state_dir: Path, *,
        tls: bool = True, key: Path | None | bool = True, root_certificates: Path | None = None,
        node_config: Mapping[str, object] | None = None, tap: bool | TlsTap = False,
        max_retries: int | None = None, label: str | None = None,
    ) -> Site:
        """Start ``flower-supernode`` for ``site``.

        Parameters
        ----------
        site : str
            Site name (its key pair is ``keys/sites/<site>``).
        data_path, state_dir : Path
            Node config ``data-path`` and ``state-dir``.
        tls : bool
            False starts it with ``--insecure``.
        key : Path, bool or None
            Private key for SuperNode auth: True = the site's own, a Path = that file,
            False/None = no key.
        root_certificates : Path, optional
            CA file (default: the deployment's CA); ignored without TLS.
        node_config : mapping, optional
            Extra node config entries (strings are quoted, numbers/bools as TOML).
        tap : bool or TlsTap
            Route the SuperNode through a recording tap (new one if True).
        max_retries : int, optional
            ``--max-retries`` (connection attempts before giving up).
        label : str, optional
            Log/process label (default: the site name).
        """
        self._counter += 1
        label = label or site
        cfg: dict[str, object] = {"data-path": str(data_path), "state-dir": str(state_dir)}
        cfg.update(node_config or {})
        parts = []
        for k, v in cfg.items():
            if isinstance(v, bool):
                parts.append(f"{k}={'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                parts.append(f"{k}={v}")
            else:
                parts.append(f'{k}="{v}"')
        tap_obj: TlsTap | None = None
        if tap:
            tap_obj = tap if isinstance(tap, TlsTap) else self.add_tap(label)
        port = tap_obj.listen_port if tap_obj else self.port
        # each SuperNode keeps its FAB cache etc. in its own FLWR_HOME, like a separate machine
        env = base_env(self.root / "site-homes" / label)
        argv = ([str(BIN / "flower-supernode")] if self.heartbeat_interval is None else
                [str(BIN / "mpdrm-supernode"), "--heartbeat-interval", str(self.heartbeat_interval)])
        argv += ["--superlink", f"127.0.0.1:{port}", "--port", str(procs.free_port()),
                 "--node-config", " ".join(parts)]
        if tls:
            argv += ["--root-certificates", str(root_certificates or self.keys.ca_cert)]
        else:
            argv += ["--insecure"]
        if key is True:
            argv += ["--auth-supernode-private-key", str(self.site_keys[site].private_key)]
        elif isinstance(key, Path):
            argv += ["--auth-supernode-private-key", str(key)]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        proc = procs.start(f"supernode-{label}", argv,
                           self.logs / f"supernode-{label}-{self._counter}.log", env)
        entry = Site(name=site, proc=proc, data_path=Path(data_path),
                     state_dir=Path(state_dir), tap=tap_obj)
        if label in self.sites:
            self.others.append(self.sites[label].proc)
        self.sites[label] = entry
        return entry

    def clientapp_pids(self, label: str) -> set[int]:
        """Live ``flwr-clientapp`` processes of a site (one per message being handled)."""
        proc = self.sites[label].proc
        return {p for p in proc.tree() if "flwr-clientapp" in procs.cmdline(p)}

    def kill_site(self, label: str, sig: int = signal.SIGKILL) -> None:
        """Kill a site's SuperNode and everything under it (a crash when SIGKILL)."""
        self.sites[label].proc.stop(sig=sig, grace=5)

    # --------------------------------------------------------------- runs
    def run(self, app_dir: Path, run_config: Mapping[str, object] | None = None) -> int:
        """``flwr run APP CONNECTION --run-config ...``; returns the run id."""
        args = ["flwr", "run", str(app_dir), CONNECTION, "--format", "json"]
        for k, v in (run_config or {}).items():
            args += ["--run-config", f"{k}={json.dumps(v)}"]
        res = self.cli(*args, cwd=app_dir, timeout=120)
        data = _last_json(res.stdout)
        if not data.get("success"):
            raise RuntimeError(f"flwr run failed:\n{res.stdout}\n{res.stderr}")
        return int(data["run-id"])

    def run_status(self, run_id: int) -> dict:
        """``flwr ls --run-id`` as a dict (``status`` like ``finished:completed``)."""
        res = self.cli("flwr", "ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        runs = _last_json(res.stdout).get("runs", [])
        if not runs:
            raise RuntimeError(f"run {run_id} not listed:\n{res.stdout}")
        return dict(runs[0])

    def serverapp_running(self) -> bool:
        """True while a ``flwr-serverapp`` process runs under the SuperLink (cheap: /proc)."""
        if self.superlink is None or not self.superlink.alive():
            return False
        return any("flwr-serverapp" in procs.cmdline(p) for p in self.superlink.tree())

    def wait_run(self, run_id: int, timeout: float = 300, interval: float = 1,
                 gap: float = 3, recheck: float = 30) -> dict:
        """Wait until the run is finished; returns its last ``flwr ls`` status dict.

        Each ``flwr`` command costs about a second of CPU, so while a ServerApp process
        runs under the SuperLink only /proc is watched (every ``interval`` s), and
        ``flwr ls`` is asked at most every ``gap`` s while none runs, every ``recheck`` s
        while one does.
        """
        last_asked = [float("-inf")]

        def finished() -> dict | None:
            now = time.monotonic()
            wait = recheck if self.serverapp_running() else gap
            if now - last_asked[0] < wait:
                return None
            last_asked[0] = now
            status = self.run_status(run_id)
            return status if str(status.get("status", "")).startswith("finished") else None
        return procs.wait_for(finished, timeout, f"run {run_id} to finish", interval=interval,
                              on_fail=lambda: self.all_logs() + self.run_log(run_id))

    def wait_completed(self, run_id: int, timeout: float = 300) -> dict:
        """:meth:`wait_run`, then fail with the ServerApp's log unless it completed."""
        status = self.wait_run(run_id, timeout)
        if status.get("status") != "finished:completed":
            raise AssertionError(
                f"run {run_id} ended {status.get('status')} ({status.get('status-details')})\n"
                f"{self.run_log(run_id)}\n{self.all_logs()}"
            )
        return status

    def run_log(self, run_id: int) -> str:
        """``flwr log RUN_ID --show``: the ServerApp's log."""
        res = self.cli("flwr", "log", str(run_id), CONNECTION, "--show", check=False,
                       timeout=60)
        return re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)

    # ------------------------------------------------------------ clean-up
    def all_logs(self) -> str:
        """All process logs concatenated (for failure messages)."""
        out = []
        for path in sorted(self.logs.glob("*.log")):
            out.append(f"===== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def all_procs(self) -> list[procs.Proc]:
        """Every process this deployment started."""
        out = [s.proc for s in self.sites.values()] + self.others
        if self.superlink is not None:
            out.append(self.superlink)
        return out

    def close(self) -> list[str]:
        """Stop every SuperNode, then the SuperLink, then the taps; return leftover processes."""
        for proc in [s.proc for s in self.sites.values()] + self.others:
            proc.stop()
        if self.superlink is not None:
            self.superlink.stop()
        for tap in self.taps:
            tap.stop()
        time.sleep(0.2)
        return [f"{pid} {procs.cmdline(pid)}" for p in self.all_procs() for pid in p.leftovers()]
