"""The package layers and an AST walk that finds every import of a source tree.

``mpdrm`` (no Flower) <- ``strategies`` (no torch, no model, no video) <- ``client``,
``server`` (never each other) <- ``simulations``.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mpdrm", "strategies", "client", "server", "simulations")

#: What each package may not import (a prefix matches the module and its submodules).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "mpdrm": ("flwr", "ray", "strategies", "client", "server", "simulations"),
    "strategies": ("torch", "cv2", "opacus", "mpdrm.model", "mpdrm.data", "mpdrm.training", "mpdrm.privacy",
                   "mpdrm.contract.schema", "mpdrm.contract.runconfig", "mpdrm.contract.sharing",
                   "client", "server", "simulations"),
    "client": ("server", "simulations"),
    "server": ("client", "simulations"),
    "simulations": (),
}

#: The only ``mpdrm`` modules the strategies may use (torch-free parts of the run contract).
STRATEGIES_MAY_USE = ("mpdrm.contract.names", "mpdrm.contract.keys", "mpdrm.contract.sites")


@dataclass(frozen=True)
class Edge:
    """One import: file, line, imported module."""

    path: str
    line: int
    module: str


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import in ``source`` (relative ones resolved)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name


def edges(package: str, root: Path = ROOT) -> Iterator[Edge]:
    """Every import made by the files of ``package``."""
    for path in sorted((root / package).rglob("*.py")):
        name = module_name(path, root)
        for line, target in imports(path.read_text(), name, path.name == "__init__.py"):
            yield Edge(str(path.relative_to(root)), line, target)


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(package: str, found: Iterator[Edge]) -> list[str]:
    """The imports of ``package`` that break the layers."""
    bad = []
    for edge in found:
        if _matches(edge.module, package):
            continue
        rules = FORBIDDEN[package]
        hit = next((p for p in rules if _matches(edge.module, p)), None)
        if package == "strategies" and _matches(edge.module, "mpdrm") and hit is None:
            if not any(_matches(edge.module, m) or m.startswith(edge.module + ".") for m in STRATEGIES_MAY_USE):
                hit = "mpdrm (other than " + ", ".join(STRATEGIES_MAY_USE) + ")"
        if hit:
            bad.append(f"{edge.path}:{edge.line}: imports {edge.module} ({package} may not import {hit})")
    return bad
