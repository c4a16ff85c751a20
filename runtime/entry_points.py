"""Where a package calls into one it may not import: functions named in pyproject.toml's entry points.

The layer rules (ARCHITECTURE.md) let the training side import only the runtime, and the export
side only the runtime and the training side; yet the command line is composed of every package's
commands, and ``fit --device`` and ``export --device`` read a board profile, which ``devices/``
owns. Each such seam is an entry point group: the package that owns the function declares it in
pyproject.toml, and the caller finds it in the installed metadata instead of importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

COMMANDS = "edge_anomaly.commands"  # register(subparsers): each package adds its subcommands
DEVICE_PROFILES = "edge_anomaly.device_profiles"  # load_profile(name) -> a validated devices.DeviceProfile


def registered(group: str) -> list[Callable]:
    """The functions declared under ``group``, in the order pyproject.toml's metadata lists them."""
    entries = metadata.entry_points(group=group)
    if not entries:
        raise RuntimeError(f"the installed edge-anomaly metadata has no {group!r} entry points (installed before "
                           "pyproject.toml declared them): reinstall it, e.g. pip install --no-deps -e .")
    return [entry.load() for entry in entries]


def load_device_profile(name: str):
    """The board profile ``name`` (``devices.load_profile``; a ``ValueError`` naming the known ones if unknown)."""
    (load_profile,) = registered(DEVICE_PROFILES)
    return load_profile(name)
