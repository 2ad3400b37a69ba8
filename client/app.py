"""The Flower ClientApp of a site (``[tool.flwr.app.components] clientapp = "client.app:app"``).

Deployment: ``flower-supernode --node-config 'data-path="SITE_DIR" state-dir="STATE_DIR"'``.
Simulation: the harness builds the app with :func:`create_client_app` and layers its run
config over ``context.run_config`` (Flower's Python simulation API passes none).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from .handlers import handle_evaluate, handle_train
from .packing import packing_mod


def create_client_app(overrides: Mapping[str, Any] | None = None, mods: Sequence[Mod] | None = None) -> ClientApp:
    """Build the ClientApp.

    Parameters
    ----------
    overrides : Mapping, optional
        Run-config entries layered over ``context.run_config``.
    mods : sequence of Mod, optional
        Flower mods around both handlers (e.g. one that records every outbound message),
        inside :func:`client.packing.packing_mod`: they see the arrays by name.
    """
    extra = dict(overrides or {})
    client_app = ClientApp(mods=[packing_mod, *(mods or [])])

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        return handle_train(message, context, extra)

    @client_app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return handle_evaluate(message, context, extra)

    return client_app


app = create_client_app()
