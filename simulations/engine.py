"""The simulation process: ``python -m simulations.engine SPEC.json``.

Runs one prepared spec (written by ``mpdrm-simulate``): the federated modes through
Flower's simulation engine (Ray) with the ServerApp and ClientApp of this repository,
``centralized`` in this process without Flower. The harness runs it in a child process
so that it can always clean up (see :mod:`simulations.processes`).
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


class _DropDeprecatedRunSimulation(logging.Filter):
    """Hide Flower's notice that its Python simulation API is deprecated (we chose it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


def configure_logging(level: str) -> None:
    """Flower's logger at ``level``; our own progress lines are printed."""
    from flwr.supercore.logger import FLOWER_LOGGER  # importing it resets the level to DEBUG

    flwr_logger = FLOWER_LOGGER
    flwr_logger.setLevel(getattr(logging, level.upper(), logging.WARNING))
    for handler in flwr_logger.handlers:
        handler.addFilter(_DropDeprecatedRunSimulation())
    flwr_logger.addFilter(_DropDeprecatedRunSimulation())


def backend_config(resources: dict[str, Any]) -> dict[str, Any]:
    """Flower's Ray backend config from the ``resources`` config group.

    ``resources.ray_address`` makes Ray join that cluster (Flower passes ``init_args`` to
    ``ray.init``) instead of starting one on this machine: the sites' ClientApps then run on
    any of its nodes, which must each have this project installed at the same path.
    """
    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": str(resources.get("log_level", "WARNING")).upper(),
        "log_to_driver": True,
    }
    address = str(resources.get("ray_address") or "")
    if address and resources.get("num_cpus"):
        raise ValueError("resources.ray_address joins an existing Ray cluster, whose CPUs are set when it is "
                         "started (ray start --num-cpus); leave resources.num_cpus unset")
    if address:
        init_args["address"] = address
    elif resources.get("num_cpus"):
        init_args["num_cpus"] = int(resources["num_cpus"])
    return {
        "client_resources": {"num_cpus": float(resources.get("client_cpus", 2)), "num_gpus": float(resources.get("client_gpus", 0.0))},
        "init_args": init_args,
    }


#: The app factories, by reference like pyproject's ``[tool.flwr.app.components]``: the
#: simulation drives the two apps without importing either package's code directly.
SERVER_APP_FACTORY = "server.app:create_server_app"
CLIENT_APP_FACTORY = "client.app:create_client_app"
AUDIT_MOD_FACTORY = "client.audit:audit_mod"


def load_reference(reference: str) -> Any:
    """The object named ``"package.module:attribute"``."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def run_federated(spec: dict[str, Any]) -> None:
    """All sites through ``flwr.simulation.run_simulation`` (Ray)."""
    from flwr.simulation import run_simulation

    create_server_app = load_reference(SERVER_APP_FACTORY)
    create_client_app = load_reference(CLIENT_APP_FACTORY)
    audit_mod = load_reference(AUDIT_MOD_FACTORY)
    run_config = spec["run_config"]
    mods = [audit_mod(spec["audit_dir"])] if spec.get("audit_dir") else []
    run_simulation(
        server_app=create_server_app(run_config),
        client_app=create_client_app(run_config, mods=mods),
        num_supernodes=int(spec["num_sites"]),
        backend_config=backend_config(spec["resources"]),
    )
    if not (Path(run_config["run-dir"]) / "summary.json").is_file():
        raise RuntimeError("the simulation ended without a summary.json (see the errors above)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the simulation process."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    configure_logging(str(spec["resources"].get("log_level", "WARNING")))
    if spec["run_config"]["mode"] == "centralized":
        from .centralized import run_centralized

        run_centralized(spec["run_config"])
    else:
        run_federated(spec)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
