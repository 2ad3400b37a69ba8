"""MPDRM model components."""
from .mpdrm import MPDRM, MPDRMOutput, build_model

__all__ = ["MPDRM", "MPDRMOutput", "build_model"]
