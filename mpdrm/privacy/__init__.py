"""Client-side differential privacy (DP-SGD with Opacus) for one site; no Flower here.

Typical round at a site::

    dp = SitePrivacy(dp_cfg, state=site_state.get("dp"))      # restores the ledger
    steps = round_steps(loader, train_cfg.epochs, train_cfg.max_steps)  # DataLoader(batch_size=B)
    decision = dp.plan_round(loader, steps)                    # exact look-ahead
    if not decision.allowed:                                   # reply decision.reason
        ...
    result = train_local(model, loader, train_cfg, engine=dp.engine(), ...)  # DP-SGD; unwraps
    dp.finish()                                                # the round's report
    site_state["dp"] = dp.state_dict(); metrics["epsilon"] = dp.epsilon()

Patient-level DP (a patient's every clip is the unit) is the same round with a
:class:`PatientPoissonLoader` instead of the ``DataLoader``.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Where each exported name lives. Opacus (with SciPy and SymPy: about 2 s of start-up)
#: is imported only when one of them is first used, so that a process that never trains
#: privately (every ClientApp of a run without DP, the ServerApp) does not pay for it.
_EXPORTS = {
    "SiteAccountant": "accounting",
    "BudgetDecision": "budget",
    "check_budget": "budget",
    "DPConfig": "config",
    "PrivateTraining": "engine",
    "accounting_sample_rate": "engine",
    "check_coverage": "engine",
    "is_empty_batch": "engine",
    "make_private": "engine",
    "noise_only_step": "engine",
    "private_step": "engine",
    "plain_name": "naming",
    "plain_state_dict": "naming",
    "unwrap_model": "naming",
    "calibrate_noise_multiplier": "noise",
    "PatientPoissonLoader": "patients",
    "make_patient_private": "patients",
    "patient_private_step": "patients",
    "sum_by_patient": "patients",
    "PrivateEngine": "private_engine",
    "BudgetExhausted": "site",
    "SitePrivacy": "site",
    "round_steps": "site",
}


def __getattr__(name: str) -> Any:
    """Import an exported name's submodule on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
