"""A minimal real Flower app (ServerApp + ClientApp + pyproject) written into a folder.

It exercises the deployment machinery without the MPDRM model: the server runs FedAvg on
one shared array and writes ``summary.json`` into run-config ``out-dir``; each client keeps
a private array on disk under node-config ``state-dir`` and, only when node config
``leak=true``, wrongly sends it as ``personality.w`` — the positive control for the tap.
"""
from __future__ import annotations

from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "toyapp"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "mpdrm-tests"

[tool.flwr.app.components]
serverapp = "toyapp.server_app:app"
clientapp = "toyapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 2
min-nodes = 2
out-dir = ""
"""

SERVER = '''\
import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class SharedOnlyFedAvg(FedAvg):
    """FedAvg that drops any array a site should not have sent before aggregating."""

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        for reply in replies:
            if reply.has_content():
                arrays = reply.content["arrays"]
                for key in [k for k in arrays if not k.startswith("shared.")]:
                    del arrays[key]
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["min-nodes"])
    strategy = SharedOnlyFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                      min_evaluate_nodes=n, min_available_nodes=n)
    start = time.time()
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord({"shared.w": Array(np.zeros(4, np.float32))}),
        num_rounds=int(cfg["num-server-rounds"]),
    )
    out = Path(str(cfg["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "final": result.arrays["shared.w"].numpy().tolist(),
        "wall_seconds": time.time() - start,
    }))
'''

CLIENT = '''\
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    state = Path(str(context.node_config["state-dir"]))
    state.mkdir(parents=True, exist_ok=True)
    path = state / "private.npy"
    private = np.load(path) if path.exists() else np.zeros(4, np.float32)
    private = private + 1.0
    np.save(path, private)
    arrays = {"shared.w": Array(msg.content["arrays"]["shared.w"].numpy() + 1.0)}
    if bool(context.node_config.get("leak", False)):
        arrays["personality.w"] = Array(private)
    content = RecordDict({"arrays": ArrayRecord(arrays),
                          "metrics": MetricRecord({"num-examples": 1})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    content = RecordDict({"metrics": MetricRecord({"num-examples": 1, "loss": 0.0})})
    return Message(content=content, reply_to=msg)
'''


def write_toy_app(folder: Path) -> Path:
    """Write the toy app into ``folder`` and return it (the ``flwr run`` APP path)."""
    folder = Path(folder)
    pkg = folder / "toyapp"
    pkg.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text('"""Toy Flower app of the deployment tests."""\n')
    (pkg / "server_app.py").write_text(SERVER)
    (pkg / "client_app.py").write_text(CLIENT)
    return folder
