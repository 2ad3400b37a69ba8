"""Who gets into the federation: TLS + SuperNode authentication on a real SuperLink.

One SuperLink (TLS, ``--enable-supernode-auth``, SQLite database) serves the module.
A registered site comes online (the positive control); an unregistered key, a SuperNode
without TLS and a SuperNode that does not trust the deployment's CA are refused.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploylib.harness import Deployment
from server import certs

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """SuperLink with TLS + auth; site-01 registered and online."""
    dep = Deployment(tmp_path_factory.mktemp("admission"), num_site_keys=2)
    try:
        dep.start_superlink()
        node_id = dep.register("site-01")
        root = dep.root
        dep.start_supernode("site-01", root / "site-01", root / "state-01")
        online = dep.wait_online(1)
        assert [int(n["node-id"]) for n in online] == [node_id]
        yield dep
    finally:
        leftovers = dep.close()
        assert not leftovers, f"processes left running: {leftovers}"


def _refused(dep: Deployment, label: str, timeout: float = 60) -> str:
    """Wait for the SuperNode ``label`` to give up; return its log."""
    site = dep.sites[label]
    code = site.proc.wait_exit(timeout)
    log = site.proc.log()
    assert code is not None, f"{label} still running after {timeout} s:\n{log}"
    assert code != 0, f"{label} exited 0:\n{log}"
    return log


def _online_ids(dep: Deployment) -> set[int]:
    return {int(n["node-id"]) for n in dep.nodes() if n.get("status") == "online"}


def test_registered_site_is_online_over_tls(link: Deployment) -> None:
    nodes = link.nodes()
    assert len(nodes) == 1 and nodes[0]["status"] == "online"
    assert "Uvicorn running on https://" in link.superlink.log()  # TLS listener


def test_unregistered_key_is_refused(link: Deployment) -> None:
    before = _online_ids(link)
    root = link.root
    link.start_supernode("site-02", root / "site-02", root / "state-02", max_retries=2)
    log = _refused(link, "site-02")
    assert "Failed to activate SuperNode" in log
    assert "No SuperNode found with the given public key" in link.superlink.log()
    assert _online_ids(link) == before


def test_supernode_without_tls_is_refused(link: Deployment) -> None:
    before = _online_ids(link)
    root = link.root
    # plain HTTP to the TLS port, no key: the SuperLink never answers it
    link.start_supernode("site-02", root / "site-02", root / "state-02", tls=False, key=False,
                         max_retries=2, label="insecure")
    log = _refused(link, "insecure")
    assert "could not establish a connection to the SuperLink" in log
    assert _online_ids(link) == before


def test_supernode_with_key_but_without_tls_is_refused(link: Deployment) -> None:
    root = link.root
    link.start_supernode("site-01", root / "site-01", root / "state-x", tls=False, key=True,
                         max_retries=2, label="insecure-with-key")
    log = _refused(link, "insecure-with-key")
    assert "requires a secure TLS connection" in log


def test_supernode_trusting_another_ca_is_refused(link: Deployment, tmp_path: Path) -> None:
    before = _online_ids(link)
    other = certs.write_bundle(tmp_path / "other-ca", 1)
    root = link.root
    link.start_supernode("site-01", root / "site-01", root / "state-y",
                         root_certificates=other.ca_cert, max_retries=2, label="wrong-ca")
    log = _refused(link, "wrong-ca")
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert _online_ids(link) == before
