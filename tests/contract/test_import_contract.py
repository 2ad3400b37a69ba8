"""The package layers hold: an AST walk over every import, and what importing a layer loads."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.contract.layers import PACKAGES, ROOT, Edge, edges, imports, violations


@pytest.mark.parametrize("package", PACKAGES)
def test_import_contract_of_package(package):
    assert violations(package, edges(package)) == []


@pytest.mark.parametrize(("package", "module", "allowed"), [
    ("mpdrm", "flwr.app", False),
    ("strategies", "torch", False),
    ("strategies", "mpdrm.model.mpdrm", False),
    ("strategies", "mpdrm.contract.keys", True),
    ("strategies", "mpdrm.contract.sharing", False),
    ("server", "client.handlers", False),
    ("client", "server.app", False),
    ("client", "mpdrm.contract.sharing", True),
    ("simulations", "client.app", True),
])
def test_import_contract_flags_back_edges(package, module, allowed):
    found = violations(package, iter([Edge(f"{package}/x.py", 1, module)]))
    assert (found == []) is allowed


def test_import_contract_resolves_relative_imports():
    source = textwrap.dedent("""
        from .keys import SITE_ID
        from ..training import TrainConfig
        from . import names
        import torch.nn
    """)
    got = [m for _, m in imports(source, "mpdrm.contract.sharing", is_package=False)]
    assert got == ["mpdrm.contract.keys.SITE_ID", "mpdrm.training.TrainConfig", "mpdrm.contract.names", "torch.nn"]


def test_import_contract_coordinator_and_simulations_never_import_the_site_app():
    """What both need lives in ``mpdrm.contract``; the simulation loads the apps by reference."""
    hits = [f"{e.path}:{e.line}: {e.module}" for package in ("server", "simulations") for e in edges(package)
            if e.module == "client" or e.module.startswith("client.")]
    assert hits == []


def test_import_contract_strategies_load_neither_torch_nor_opencv():
    code = ("import sys, strategies, mpdrm.contract.keys, mpdrm.contract.names, mpdrm.contract.sites; "
            "print(sorted(m for m in ('torch', 'cv2', 'opacus', 'mpdrm.model') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_contract_mpdrm_loads_no_flower():
    code = ("import sys, mpdrm, mpdrm.training, mpdrm.contract.sharing, mpdrm.contract.runconfig, mpdrm.privacy; "
            "print(sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_apps_load_opacus_only_when_a_run_trains_privately():
    """Opacus (with SciPy and SymPy) costs about 2 s per process: every ClientApp of a run
    without DP would pay it once per message. It is imported where DP-SGD starts."""
    code = ("import sys, client.app, server.app, simulations.simulate, mpdrm.privacy; "
            "before = sorted(m for m in ('opacus', 'scipy', 'sympy') if m in sys.modules); "
            "from mpdrm.privacy import SitePrivacy, DPConfig; "
            "print(before, 'opacus' in sys.modules, SitePrivacy.__module__, DPConfig.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True", "mpdrm.privacy.site", "mpdrm.privacy.config"]


def test_privacy_package_refuses_unknown_names():
    import mpdrm.privacy

    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        mpdrm.privacy.NotAThing  # noqa: B018
    assert set(mpdrm.privacy.__all__) <= set(dir(mpdrm.privacy))
