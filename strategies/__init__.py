"""Personalised Flower strategies: only shared names travel, every reply is checked.

Public API
----------
build_strategy(name, shared_names, **options) -> PersonalizedStrategy
PersonalizedStrategy(aggregator, shared_names, ...)
AGGREGATORS: rule name -> Flower strategy class
select_shared(arrays, shared_names) -> ArrayRecord
aggregator_state(strategy) / load_aggregator_state(strategy, state)
Rejection, RoundLog: what the strategy records per round
RobustConfig, robust_config: bounded influence of one site (strategy.robust)
"""

from .factory import AGGREGATORS, build_strategy
from .personalized import PersonalizedStrategy
from .records import select_shared
from .robust import RobustConfig, robust_config
from .round_log import Rejection, RoundLog
from .state import aggregator_state, load_aggregator_state
from .validation import LOCAL_PREFIX, validate_evaluate_reply, validate_train_reply

__all__ = [
    "AGGREGATORS",
    "LOCAL_PREFIX",
    "PersonalizedStrategy",
    "Rejection",
    "RobustConfig",
    "RoundLog",
    "aggregator_state",
    "build_strategy",
    "load_aggregator_state",
    "robust_config",
    "select_shared",
    "validate_evaluate_reply",
    "validate_train_reply",
]
