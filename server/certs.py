"""Key material for a real deployment: a CA, the SuperLink's TLS certificate, site keys.

Pure generation code built on the ``cryptography`` package (no openssl or ssh-keygen
binary needed). ``mpdrm-deploy certs`` (``server.deploy_cli``) wraps :func:`write_bundle`.

Layout written by :func:`write_bundle`::

    OUT_DIR/ca.crt                      public: every site and every ``flwr`` user gets it
    OUT_DIR/ca.key                      SECRET: the coordinator keeps it offline
    OUT_DIR/server.pem                  public: the SuperLink's certificate
    OUT_DIR/server.key                  SECRET: stays on the SuperLink machine
    OUT_DIR/sites/<site>/auth_key       SECRET: stays at the site (OpenSSH EC private key)
    OUT_DIR/sites/<site>/auth_key.pub   public: the coordinator registers it

In a real deployment each site should create its own key pair on its own machine
(:func:`write_site_keypair`, ``mpdrm-deploy site-key``) and send only the ``.pub`` file;
the all-in-one bundle is for tests and for small deployments run by one person.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""Names the SuperLink certificate is always valid for (loopback)."""

_CURVE = ec.SECP384R1
"""P-384: the curve Flower itself uses for SuperNode keys (any NIST curve is accepted)."""


@dataclass(frozen=True)
class SiteKeyPaths:
    """Where one site's authentication key pair was written.

    Parameters
    ----------
    name : str
        Site name (folder name under ``sites/``).
    private_key : Path
        OpenSSH private key, passed to ``flower-supernode --auth-supernode-private-key``.
    public_key : Path
        OpenSSH public key, passed to ``flwr supernode register``.
    """

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class BundlePaths:
    """Paths of everything :func:`write_bundle` wrote.

    Parameters
    ----------
    root : Path
        The output folder.
    ca_cert, ca_key : Path
        The certificate authority (``ca.key`` is secret).
    server_cert, server_key : Path
        The SuperLink's TLS certificate and key (``server.key`` is secret).
    sites : list of SiteKeyPaths
        One key pair per site, in site order.
    """

    root: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sites: list[SiteKeyPaths] = field(default_factory=list)


def site_names(count: int) -> list[str]:
    """Default site names ``site-01 .. site-NN`` (the synthetic cohort's folder names).

    Parameters
    ----------
    count : int
        Number of sites, at least 1.

    Returns
    -------
    list of str
    """
    if count < 1:
        raise ValueError(f"the number of sites must be at least 1, got {count}")
    return [f"site-{i:02d}" for i in range(1, count + 1)]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_ca(
    common_name: str = "FedMPDRM deployment CA", valid_days: int = 825
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create a self-signed certificate authority.

    Parameters
    ----------
    common_name : str
        Subject common name of the CA.
    valid_days : int
        Validity period in days.

    Returns
    -------
    (private key, certificate)
    """
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    valid_days: int = 397,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create the SuperLink's TLS server certificate, signed by the CA.

    Parameters
    ----------
    ca_key, ca_cert : CA key and certificate from :func:`generate_ca`.
    hosts : sequence of str
        DNS names and IP addresses the SuperLink is reached at (subject alternative
        names); the first one is also the common name.
    valid_days : int
        Validity period in days.

    Returns
    -------
    (private key, certificate)
    """
    hosts = list(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    if not hosts:
        raise ValueError("the SuperLink certificate needs at least one host name or IP")
    key = ec.generate_private_key(_CURVE())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([_san_entry(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate_site_keypair(comment: str = "") -> tuple[bytes, bytes]:
    """Create one site's SuperNode authentication key pair (OpenSSH EC, P-384).

    Parameters
    ----------
    comment : str
        Appended to the public key line (e.g. the site name).

    Returns
    -------
    (private key, public key) as OpenSSH-encoded bytes.
    """
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if comment:
        public += b" " + comment.encode("ascii", errors="replace")
    return private, public + b"\n"


def _write(path: Path, data: bytes, *, secret: bool, overwrite: bool) -> Path:
    """Write ``data`` to ``path``; secrets get mode 0600 from the moment they exist."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True / --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if secret else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    return path


def write_site_keypair(site_dir: Path, name: str, *, overwrite: bool = False) -> SiteKeyPaths:
    """Write ``auth_key`` (0600) and ``auth_key.pub`` for one site into ``site_dir``.

    Parameters
    ----------
    site_dir : Path
        Folder to write into (created if missing).
    name : str
        Site name, used as the public key's comment.
    overwrite : bool
        Replace existing files instead of refusing.

    Returns
    -------
    SiteKeyPaths
    """
    site_dir = Path(site_dir)
    private, public = generate_site_keypair(comment=name)
    return SiteKeyPaths(
        name=name,
        private_key=_write(site_dir / "auth_key", private, secret=True, overwrite=overwrite),
        public_key=_write(site_dir / "auth_key.pub", public, secret=False, overwrite=overwrite),
    )


def write_bundle(
    out_dir: Path,
    sites: int | Sequence[str],
    *,
    hosts: Sequence[str] = (),
    valid_days: int = 397,
    overwrite: bool = False,
) -> BundlePaths:
    """Write a CA, the SuperLink certificate and one key pair per site into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Output folder (created if missing).
    sites : int or sequence of str
        Number of sites (named ``site-01``...) or explicit site names.
    hosts : sequence of str
        Extra DNS names / IPs for the SuperLink certificate, added to
        :data:`DEFAULT_HOSTS`.
    valid_days : int
        Validity of the server certificate (the CA gets at least as long).
    overwrite : bool
        Replace existing files instead of refusing.

    Returns
    -------
    BundlePaths
    """
    names = site_names(sites) if isinstance(sites, int) else [str(s) for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"site names must be unique, got {names}")
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid site name {name!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = generate_ca(valid_days=max(valid_days, 825))
    srv_key, srv_cert = generate_server_cert(
        ca_key, ca_cert, hosts=[*DEFAULT_HOSTS, *hosts], valid_days=valid_days
    )
    pem = serialization.Encoding.PEM
    paths = BundlePaths(
        root=root,
        ca_cert=_write(root / "ca.crt", ca_cert.public_bytes(pem), secret=False, overwrite=overwrite),
        ca_key=_write(root / "ca.key", _private_pem(ca_key), secret=True, overwrite=overwrite),
        server_cert=_write(
            root / "server.pem", srv_cert.public_bytes(pem), secret=False, overwrite=overwrite
        ),
        server_key=_write(root / "server.key", _private_pem(srv_key), secret=True, overwrite=overwrite),
    )
    for name in names:
        paths.sites.append(write_site_keypair(root / "sites" / name, name, overwrite=overwrite))
    return paths
