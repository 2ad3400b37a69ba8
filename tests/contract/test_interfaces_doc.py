"""Every public name the docs write as a dotted name in backticks resolves in the code.

A backticked span (outside fenced code blocks) that starts with ``mpdrm.``, ``strategies.``,
``client.``, ``server.`` or ``simulations.`` names a module, or a module and an attribute
chain (``mpdrm.contract.runconfig.merged``, ``mpdrm.privacy.SitePrivacy.finish``); what
follows the name in the span (a call signature, ``:app``) is ignored. A name that does not
import or resolve fails the test with the doc file and the name.
"""
from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from tests.contract.layers import PACKAGES, ROOT

DOCS = ("docs/interfaces.md", "docs/architecture.md")

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
_NAME = re.compile(r"(?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+" % "|".join(PACKAGES))


def dotted_names(text: str) -> list[str]:
    """The dotted names that start a backticked span, in order of appearance, once each.

    Parameters
    ----------
    text : str
        Markdown.

    Returns
    -------
    list of str
        E.g. ``["mpdrm.partition", "strategies.PersonalizedStrategy"]``.
    """
    names: list[str] = []
    for span in _SPAN.findall(_FENCE.sub("", text)):
        match = _NAME.match(span.strip())
        if match and match.group(0) not in names:
            names.append(match.group(0))
    return names


def resolve(name: str) -> object:
    """Import the longest importable module prefix of ``name``, then follow the attributes.

    A dataclass field without a class-level default counts as an attribute of its class.

    Raises
    ------
    LookupError
        Naming the part that does not resolve.
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise
        break
    else:
        raise LookupError(f"no importable module in {name!r}")
    for attr in parts[cut:]:
        if hasattr(obj, attr):
            obj = getattr(obj, attr)
        elif dataclasses.is_dataclass(obj) and attr in {f.name for f in dataclasses.fields(obj)}:
            obj = next(f for f in dataclasses.fields(obj) if f.name == attr)
        else:
            raise LookupError(f"{getattr(obj, '__name__', obj)!s} has no attribute {attr!r}")
    return obj


@pytest.mark.parametrize("doc", DOCS)
def test_interfaces_doc_names_resolve(doc):
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    names = dotted_names(path.read_text(encoding="utf-8"))
    assert names, f"{doc}: no backticked dotted name found"
    failures = []
    for name in names:
        try:
            resolve(name)
        except Exception as err:  # noqa: BLE001 - every failure is reported with its name
            failures.append(f"{doc}: `{name}` does not resolve: {type(err).__name__}: {err}")
    assert failures == [], "\n".join(failures)


def test_interfaces_doc_extraction_and_resolution():
    text = ("Use `mpdrm.contract.runconfig.merged(*configs, extra=None)` and `server.app:app`;\n"
            "not `model.size`, `mpdrm/contract/schema.py` or `mpdrm`.\n"
            "```\n`mpdrm.not_in_code_blocks`\n```\n")
    assert dotted_names(text) == ["mpdrm.contract.runconfig.merged", "server.app"]
    assert resolve("mpdrm.partition") is importlib.import_module("mpdrm.partitioning").partition
    assert resolve("mpdrm.training.TrainResult.steps").name == "steps"  # a dataclass field
    for bogus in ("mpdrm.contract.no_such_module", "strategies.PersonalizedStrategy.no_such_method"):
        with pytest.raises(LookupError):
            resolve(bogus)


#: Files kept beside the repository that no document may point to (spelt in two parts so
#: that a search of the repository for them finds only real references).
OUTSIDE = ("DESIGN" + ".md", ".." + "/shared")


def test_interfaces_doc_lists_no_file_outside_the_repository():
    """The docs stand alone: no reference to files kept beside the repository."""
    for doc in (*DOCS, "docs/benchmarks.md", "README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert not [name for name in OUTSIDE if name in text], doc

