"""Hydra configuration of mpdrm-simulate (a package so that Hydra finds it when installed)."""
