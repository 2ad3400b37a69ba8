"""The Flower API ``mpdrm-simulate`` relies on (``simulations/engine.py``), pinned.

``flwr.simulation.run_simulation`` is deprecated in Flower 1.42 in favour of ``flwr run``;
we keep it on purpose (docs/architecture.md, section 8). These tests fail as soon as a Flower
upgrade removes it or changes the parameters we pass, instead of a simulation failing.
"""
from __future__ import annotations

import inspect
import logging

import pytest

from simulations.engine import _DropDeprecatedRunSimulation, backend_config

#: The keyword arguments ``simulations.engine.run_federated`` passes.
PASSED = ("server_app", "client_app", "num_supernodes", "backend_config")


def _signature() -> inspect.Signature:
    flwr_simulation = pytest.importorskip("flwr.simulation")
    assert hasattr(flwr_simulation, "run_simulation"), "flwr.simulation.run_simulation was removed"
    return inspect.signature(flwr_simulation.run_simulation)


def test_run_simulation_accepts_the_arguments_we_pass() -> None:
    params = _signature().parameters
    for name in PASSED:
        assert name in params, f"run_simulation lost the parameter {name!r}: {list(params)}"
        assert params[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    assert required <= set(PASSED), f"run_simulation now requires {sorted(required - set(PASSED))}"


def test_run_simulation_takes_apps_and_backend_config_as_we_build_them() -> None:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    params = _signature().parameters
    assert params["server_app"].annotation in (ServerApp, "ServerApp")
    assert params["client_app"].annotation in (ClientApp, "ClientApp")
    assert params["num_supernodes"].annotation in (int, "int")
    config = backend_config({"client_cpus": 1, "num_cpus": 2})
    assert set(config) <= {"client_resources", "init_args", "actor"}  # the keys Flower documents
    assert set(config["client_resources"]) == {"num_cpus", "num_gpus"}


def test_deprecation_notice_is_still_the_one_we_filter() -> None:
    source = inspect.getsource(pytest.importorskip("flwr.simulation.run_simulation"))
    assert "run_simulation` function is deprecated" in source
    record = logging.LogRecord("flwr", logging.WARNING, __file__, 0,
                               "The `run_simulation` function is deprecated and will be removed", None, None)
    assert not _DropDeprecatedRunSimulation().filter(record)
