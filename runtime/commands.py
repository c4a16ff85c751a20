"""Runtime commands (``bench``), registered into the main command by edge_anomaly.cli."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the runtime's subcommands to ``subparsers``."""
