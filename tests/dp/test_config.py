"""DPConfig parsing and validation."""
from __future__ import annotations

import pytest

from mpdrm.privacy import DPConfig

pytestmark = pytest.mark.dp


def test_from_flower_style_keys():
    cfg = DPConfig.from_dict({"dp-noise-multiplier": 1.1, "max-grad-norm": 0.5, "delta": 1e-6,
                              "epsilon-budget": 8, "target_epsilon": None})
    assert cfg.noise_multiplier == 1.1 and cfg.max_grad_norm == 0.5 and cfg.budget == 8.0
    assert DPConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"noise_multiplier": 1.0, "target_epsilon": 2.0, "planned_rounds": 3}, "exactly one"),
    ({"target_epsilon": 2.0}, "planned_rounds"),
    ({"noise_multiplier": 1.0, "accountant": "gdp"}, "accountant"),
    ({"noise_multiplier": 1.0, "grad_sample_mode": "ghost"}, "grad_sample_mode"),
    ({"noise_multiplier": 1.0, "delta": 0.0}, "delta"),
])
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPConfig(**kwargs)


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="unknown DP config keys"):
        DPConfig.from_dict({"noise_multiplier": 1.0, "noise_multipler": 2.0})
