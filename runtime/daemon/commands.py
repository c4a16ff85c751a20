"""``edge-anomaly serve``, registered into the main command by edge_anomaly.cli."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the daemon's subcommands to ``subparsers``."""
