"""Server-optimizer state of a strategy, for checkpoints and resume.

Flower's FedAdam/FedYogi keep moments (``m_t``, ``v_t``), FedAvgM a momentum vector and
its current arrays, the adaptive-clipping DP wrapper its current clipping norm. These
live on the aggregator (possibly inside a DP wrapper); this module reads and restores
them as plain data only: dicts, lists, ``str``/``float`` and NumPy arrays, never objects,
so that the coordinator's checkpoint stores them in a data-only file
(``mpdrm.tensorfile``) and nothing in it can run code when read back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

_ARRAY_DICTS = ("m_t", "v_t")
_ARRAY_LISTS = ("momentum_vector",)
_SCALARS = ("clipping_norm",)


def _chain(strategy: Strategy) -> list[Strategy]:
    """Return the strategy and every strategy it wraps (outermost first)."""
    chain = [strategy]
    while True:
        inner = getattr(chain[-1], "aggregator", None) or getattr(
            chain[-1], "strategy", None
        )
        if not isinstance(inner, Strategy):
            return chain
        chain.append(inner)


def aggregator_state(strategy: Strategy) -> list[dict[str, Any]]:
    """Return the optimizer state of each strategy in the wrapping chain.

    Parameters
    ----------
    strategy : Strategy
        A :class:`~strategies.PersonalizedStrategy` or any Flower strategy.

    Returns
    -------
    list[dict[str, Any]]
        One dict per strategy in the chain (outermost first) with the attributes
        present: ``m_t``/``v_t`` (name -> ndarray), ``momentum_vector`` (list of
        ndarrays), ``current_arrays`` of FedAvgM (name -> ndarray),
        ``clipping_norm`` (float), ``accountant`` (a DP wrapper's privacy
        accountant ``state_dict()``, so that epsilon survives a resume).
    """
    states: list[dict[str, Any]] = []
    for item in _chain(strategy):
        state: dict[str, Any] = {"class": type(item).__name__}
        for attr in _ARRAY_DICTS:
            value = getattr(item, attr, None)
            if value is not None:
                state[attr] = {k: np.array(v, copy=True) for k, v in value.items()}
        for attr in _ARRAY_LISTS:
            value = getattr(item, attr, None)
            if value is not None:
                state[attr] = [np.array(v, copy=True) for v in value]
        for attr in _SCALARS:
            if hasattr(item, attr):
                state[attr] = float(getattr(item, attr))
        accountant = getattr(item, "accountant", None)
        if accountant is not None and hasattr(accountant, "state_dict"):
            state["accountant"] = accountant.state_dict()
        current = getattr(item, "current_arrays", None)
        if isinstance(current, ArrayRecord) and "momentum_vector" in state:
            state["current_arrays"] = {k: a.numpy() for k, a in current.items()}
        states.append(state)
    return states


def load_aggregator_state(strategy: Strategy, states: list[dict[str, Any]]) -> None:
    """Restore what :func:`aggregator_state` returned onto an identically built chain.

    Raises
    ------
    ValueError
        If the chain's classes differ from those the state was taken from.
    """
    chain = _chain(strategy)
    classes = [type(item).__name__ for item in chain]
    saved = [state["class"] for state in states]
    if classes != saved:
        raise ValueError(f"strategy chain {classes} does not match saved state {saved}")
    for item, state in zip(chain, states, strict=True):
        for attr in (*_ARRAY_DICTS, *_ARRAY_LISTS, *_SCALARS):
            if attr in state:
                setattr(item, attr, state[attr])
        if "accountant" in state and getattr(item, "accountant", None) is not None:
            item.accountant.load_state_dict(state["accountant"])  # type: ignore[attr-defined]
        if "current_arrays" in state:
            item.current_arrays = ArrayRecord(  # type: ignore[attr-defined]
                {k: Array(np.asarray(v)) for k, v in state["current_arrays"].items()}
            )
