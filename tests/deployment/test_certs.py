"""``mpdrm-deploy certs``: the CA, the SuperLink certificate and the site keys (no processes)."""
from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from server import certs
from server.deploy_cli import main


def test_cli_writes_bundle_with_secret_modes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "keys"
    assert main(["certs", str(out), "--sites", "3", "--host", "link.hospital.example",
                 "--host", "10.1.2.3"]) == 0
    printed = capsys.readouterr().out
    for name in ("ca.crt", "ca.key", "server.pem", "server.key"):
        assert (out / name).is_file()
    sites = sorted(p.name for p in (out / "sites").iterdir())
    assert sites == ["site-01", "site-02", "site-03"]
    for secret in [out / "ca.key", out / "server.key", *(out / "sites").glob("*/auth_key")]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert "SECRET" in printed
    assert stat.S_IMODE((out / "ca.crt").stat().st_mode) == 0o644


def test_server_certificate_chains_to_ca_with_sans(tmp_path: Path) -> None:
    paths = certs.write_bundle(tmp_path, 1, hosts=["link.hospital.example", "10.1.2.3"])
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    srv.verify_directly_issued_by(ca)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "link.hospital.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3")}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not srv.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the standard library (what TLS clients use) accepts the pair and the chain
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    ssl.create_default_context(cafile=str(paths.ca_cert))


def test_site_keys_are_what_flower_accepts(tmp_path: Path) -> None:
    paths = certs.write_bundle(tmp_path, ["north", "south"])
    assert [s.name for s in paths.sites] == ["north", "south"]
    publics = set()
    for site in paths.sites:
        private = load_ssh_private_key(site.private_key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        # Flower's own loader for `flwr supernode register` (NIST curve check)
        publics.add(try_load_public_key(site.public_key))
        assert site.public_key.read_text().strip().endswith(site.name)
    assert len(publics) == 2


def test_refuses_to_overwrite_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["certs", str(tmp_path), "--sites", "1"]) == 0
    assert main(["certs", str(tmp_path), "--sites", "1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["certs", str(tmp_path), "--sites", "1", "--force"]) == 0
    assert main(["certs", str(tmp_path / "x"), "--sites", "0"]) == 1
    assert main(["certs", str(tmp_path / "y"), "--site-names", "a,a"]) == 1
    assert main(["certs", str(tmp_path / "z")]) == 1
    assert "--sites" in capsys.readouterr().err


def test_site_key_command(tmp_path: Path) -> None:
    assert main(["site-key", str(tmp_path / "mine"), "--name", "site-07"]) == 0
    assert try_load_public_key(tmp_path / "mine" / "auth_key.pub")
    assert stat.S_IMODE((tmp_path / "mine" / "auth_key").stat().st_mode) == 0o600


def test_connection_command_writes_flower_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    paths = certs.write_bundle(tmp_path / "keys", 1)
    assert main(["connection", "hospitals", "--address", "10.0.0.5:9093",
                 "--root-certificates", str(paths.ca_cert), "--default"]) == 0
    from flwr.cli.flower_config import read_superlink_connection

    conn = read_superlink_connection("hospitals")
    assert conn.address == "10.0.0.5:9093"
    assert conn.root_certificates == str(paths.ca_cert.resolve())
    assert not conn.insecure
    assert read_superlink_connection(None).name == "hospitals"
    assert main(["connection", "nocert", "--address", "10.0.0.5:9093"]) == 1
