"""The repository's ``benchmarks`` package for these tests, imported from its folder: Opacus
installs an unrelated top-level ``benchmarks`` package into site-packages, which a plain
``import benchmarks`` would find first here (pytest does not put the repository root on
``sys.path``)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "benchmarks"


def _import_ours() -> None:
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(loaded.__file__ or "").resolve().parent == PACKAGE:
        return
    spec = importlib.util.spec_from_file_location("benchmarks", PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module
    spec.loader.exec_module(module)


_import_ours()
