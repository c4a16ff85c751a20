"""Board profiles: what to export, how to run and how to install edge-anomaly on each board.

One YAML file per board in this folder (``station.yaml`` beside them is the daemon's example
config, not a profile). Only pyyaml and pydantic are needed, so an edge box with just a
runtime extra can read them.
"""

from __future__ import annotations

from pathlib import Path

from devices.profile import DeviceProfile, ProfileError, read_profile

FOLDER = Path(__file__).resolve().parent
# The repository when running from a source checkout (editable install); None in an installed wheel.
SOURCE_ROOT = FOLDER.parent if (FOLDER.parent / "pyproject.toml").is_file() else None
NOT_PROFILES = {"station"}

__all__ = ["FOLDER", "SOURCE_ROOT", "DeviceProfile", "ProfileError", "list_profiles", "load_profile"]


def profile_names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.yaml") if p.stem not in NOT_PROFILES)


def load_profile(name: str) -> DeviceProfile:
    """The validated profile ``devices/<name>.yaml``."""
    if name not in profile_names():
        raise ProfileError(f"unknown device profile {name!r} (known: {', '.join(profile_names())})")
    return read_profile(FOLDER / f"{name}.yaml")


def list_profiles() -> list[DeviceProfile]:
    return [load_profile(name) for name in profile_names()]
