"""``edge-anomaly serve``, registered into the main command by edge_anomaly.cli."""

from __future__ import annotations

import argparse


def run_serve(args: argparse.Namespace) -> None:
    from runtime.station.service import serve

    serve(args.config, check_only=args.check)


def register(subparsers) -> None:
    """Add the daemon's subcommands to ``subparsers``."""
    serve = subparsers.add_parser("serve", help="run a station: inspect on the line, publish over MQTT")
    serve.add_argument("--config", required=True, help="station YAML (see devices/station.yaml)")
    serve.add_argument("--check", action="store_true", help="validate the config and bundles, then exit")
    serve.set_defaults(run=run_serve)
