"""``edge-anomaly serve``, ``keys`` and ``sign``, registered into the main command by edge_anomaly.cli."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_serve(args: argparse.Namespace) -> None:
    from runtime.station.service import serve

    serve(args.config, check_only=args.check)


def run_keys_new(args: argparse.Namespace) -> None:
    from runtime.signing import new_key_pair

    private, public, ident = new_key_pair(args.out)
    print(f"key {ident}: private {private} (keep it off the stations), public {public} (list it under trust:)")


def run_sign(args: argparse.Namespace) -> None:
    from runtime.signing import load_private_key, sign_bundle

    ident = sign_bundle(args.bundle, load_private_key(args.key))
    print(f"{args.bundle} signed with key {ident}")


def run_opcua_certificate(args: argparse.Namespace) -> None:
    import asyncio

    from runtime.station.config import load_config
    from runtime.station.opcua.security import application_uri, describe_certificate, make_certificate

    config = load_config(args.config)
    if args.if_enabled and not config.opcua.enabled:
        print(f"{args.config}: opcua is not enabled; no certificate made")
        return
    certificate, key = asyncio.run(make_certificate(config.opcua, config.station))
    print(f"OPC UA certificate {certificate} (key {key}) for {application_uri(config.station)}: "
          f"{describe_certificate(certificate)}; trust clients by copying their certificates into "
          f"{config.opcua.trusted_clients}")


def register(subparsers) -> None:
    """Add the station's subcommands to ``subparsers``."""
    serve = subparsers.add_parser("serve", help="run a station: inspect on the line, publish over MQTT")
    serve.add_argument("--config", required=True, help="station YAML (see devices/station.yaml)")
    serve.add_argument("--check", action="store_true",
                       help="validate the config, bundles, trust and writable state; report every problem, then exit")
    serve.set_defaults(run=run_serve)

    keys = subparsers.add_parser("keys", help="signing keys for bundles and packages")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_commands.add_parser("new", help="make an Ed25519 key pair: <key id>.key and <key id>.pub")
    new.add_argument("--out", type=Path, required=True, help="folder for the key pair")
    new.set_defaults(run=run_keys_new)

    certificate = subparsers.add_parser(
        "opcua-certificate", help="make the station's own OPC UA certificate and key (kept if they exist) and its "
                                  "empty client trust folder, at the paths station.yaml's opcua: names")
    certificate.add_argument("--config", required=True, help="station YAML")
    certificate.add_argument("--if-enabled", action="store_true",
                             help="do nothing unless the config enables opcua (what install.sh runs)")
    certificate.set_defaults(run=run_opcua_certificate)

    sign = subparsers.add_parser("sign", help="sign an existing bundle (folder, its .tar twin, or a .tar)")
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="private key from edge-anomaly keys new")
    sign.set_defaults(run=run_sign)
