"""Which state is site-local, and the federation modes. Imports nothing heavy."""
from __future__ import annotations

#: Prefix of the state_dict keys that never leave a site (MPFN, its head, its prototypes).
LOCAL_PREFIX = "personality."

#: ``mode`` values of a federated run: what leaves a site (see :mod:`mpdrm.contract.sharing`).
MODES = ("mpdrm", "fedavg_full", "local_only")

#: ``strategy.mode`` values of ``mpdrm-simulate`` (``centralized`` runs without Flower).
SIMULATION_MODES = (*MODES, "centralized")


def is_local(name: str) -> bool:
    """True for a state_dict key that must stay at its site."""
    return name.startswith(LOCAL_PREFIX)
