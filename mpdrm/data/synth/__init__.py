"""The synthetic longitudinal cohort (docs/architecture.md, section 4): see ``cohort.generate_cohort``,
the generative model in ``model``, the renderer in ``render`` and the oracle in ``oracle``."""
from .cohort import DEFAULTS, generate_cohort

__all__ = ["generate_cohort", "DEFAULTS"]
