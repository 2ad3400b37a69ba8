"""``mpdrm-deploy``: helpers for a real multi-site deployment on Flower's deployment engine.

Sub-commands
------------
``mpdrm-deploy certs OUT_DIR --sites N [--host NAME ...]``
    CA, SuperLink TLS certificate (localhost/127.0.0.1/::1 plus every ``--host``) and one
    OpenSSH EC key pair per site (see :mod:`server.certs` for the layout).
``mpdrm-deploy site-key OUT_DIR --name SITE``
    One site's key pair only (what a site runs on its own machine).
``mpdrm-deploy connection NAME --address HOST:PORT --root-certificates CA``
    Add a SuperLink connection to ``$FLWR_HOME/config.toml`` (used by ``flwr run``,
    ``flwr ls``, ``flwr log`` and ``flwr supernode register``).

The transport itself is Flower's (``flower-superlink``, ``flower-supernode``, ``flwr``);
see docs/deployment.md.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from server import certs


def _cmd_certs(args: argparse.Namespace) -> int:
    sites: int | list[str]
    if args.site_names:
        sites = [s.strip() for s in args.site_names.split(",") if s.strip()]
        if args.sites is not None and args.sites != len(sites):
            raise ValueError(f"--sites {args.sites} but {len(sites)} names in --site-names")
    elif args.sites is not None:
        sites = args.sites
    else:
        raise ValueError("give --sites N or --site-names a,b,...")
    paths = certs.write_bundle(
        Path(args.out_dir), sites, hosts=args.host, valid_days=args.days, overwrite=args.force
    )
    print(f"CA certificate       {paths.ca_cert}   (public: give to every site and flwr user)")
    print(f"CA key               {paths.ca_key}   (SECRET: keep offline)")
    print(f"SuperLink cert       {paths.server_cert}")
    print(f"SuperLink key        {paths.server_key}   (SECRET: SuperLink machine only)")
    for site in paths.sites:
        print(f"{site.name:<20} {site.private_key}   (SECRET: this site only)")
        print(f"{'':<20} {site.public_key}   (public: coordinator registers it)")
    return 0


def _cmd_site_key(args: argparse.Namespace) -> int:
    site = certs.write_site_keypair(Path(args.out_dir), args.name, overwrite=args.force)
    print(f"private key {site.private_key}   (SECRET: never leaves this site)")
    print(f"public key  {site.public_key}   (send to the coordinator)")
    return 0


def _cmd_connection(args: argparse.Namespace) -> int:
    # Flower's own reader/writer of $FLWR_HOME/config.toml, so the format stays Flower's.
    from flwr.cli.flower_config import (  # pylint: disable=import-outside-toplevel
        init_flwr_config,
        set_default_superlink_connection,
        write_superlink_connection,
    )
    from flwr.cli.typing import SuperLinkConnection  # pylint: disable=import-outside-toplevel

    if args.insecure and args.root_certificates:
        raise ValueError("--insecure and --root-certificates exclude each other")
    if not args.insecure and not args.root_certificates:
        raise ValueError("give --root-certificates CA_CERT (or --insecure, for local tests only)")
    root = None
    if args.root_certificates:
        root_path = Path(args.root_certificates).expanduser().resolve()
        if not root_path.is_file():
            raise FileNotFoundError(f"root certificate {root_path} does not exist")
        root = str(root_path)
    init_flwr_config()
    write_superlink_connection(
        SuperLinkConnection(
            name=args.name, address=args.address, root_certificates=root,
            insecure=True if args.insecure else None,
        )
    )
    if args.default:
        set_default_superlink_connection(args.name)
    print(f"SuperLink connection '{args.name}' -> {args.address}"
          f" ({'INSECURE' if args.insecure else 'TLS, CA ' + str(root)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the ``mpdrm-deploy`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="mpdrm-deploy",
        description="Key material and connections for a FedMPDRM deployment "
        "(Flower SuperLink + one SuperNode per site). See docs/deployment.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="CA, SuperLink certificate and one key pair per site")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--sites", type=int, help="number of sites (named site-01, site-02, ...)")
    p.add_argument("--site-names", help="comma-separated site names instead of site-NN")
    p.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                   help="extra DNS name or IP of the SuperLink (repeatable); "
                   "localhost, 127.0.0.1 and ::1 are always included")
    p.add_argument("--days", type=int, default=397, help="server certificate validity (days)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=_cmd_certs)

    p = sub.add_parser("site-key", help="one site's SuperNode authentication key pair")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--name", required=True, help="site name (public key comment)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=_cmd_site_key)

    p = sub.add_parser("connection", help="add a SuperLink connection to $FLWR_HOME/config.toml")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--address", required=True, help="SuperLink HOST:PORT")
    p.add_argument("--root-certificates", help="CA certificate (ca.crt) that signed the SuperLink's")
    p.add_argument("--insecure", action="store_true", help="plain HTTP (local tests only)")
    p.add_argument("--default", action="store_true", help="make it the default connection")
    p.set_defaults(func=_cmd_connection)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mpdrm-deploy``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (0 on success, 1 on a reported error).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError, OSError) as err:
        print(f"mpdrm-deploy {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
