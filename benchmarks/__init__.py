"""The benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...] [--list]``.

Every benchmark is also a script of its own (``python benchmarks/NAME.py``). This file makes
``benchmarks`` a regular package, so that from the repository root it wins over the unrelated
top-level ``benchmarks`` package that Opacus installs into site-packages.
"""
