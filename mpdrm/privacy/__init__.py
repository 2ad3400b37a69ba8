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
from .accounting import SiteAccountant
from .budget import BudgetDecision, check_budget
from .config import DPConfig
from .engine import (
    PrivateTraining,
    accounting_sample_rate,
    check_coverage,
    is_empty_batch,
    make_private,
    noise_only_step,
    private_step,
)
from .naming import plain_name, plain_state_dict, unwrap_model
from .noise import calibrate_noise_multiplier
from .patients import PatientPoissonLoader, make_patient_private, patient_private_step, sum_by_patient
from .private_engine import PrivateEngine
from .site import BudgetExhausted, SitePrivacy, round_steps

__all__ = [
    "BudgetDecision",
    "BudgetExhausted",
    "DPConfig",
    "PatientPoissonLoader",
    "PrivateEngine",
    "PrivateTraining",
    "SiteAccountant",
    "SitePrivacy",
    "accounting_sample_rate",
    "calibrate_noise_multiplier",
    "check_budget",
    "check_coverage",
    "is_empty_batch",
    "make_patient_private",
    "make_private",
    "patient_private_step",
    "noise_only_step",
    "private_step",
    "round_steps",
    "sum_by_patient",
    "plain_name",
    "plain_state_dict",
    "unwrap_model",
]
