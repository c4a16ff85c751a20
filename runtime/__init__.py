"""Torch-free inference side of edge-anomaly: what an edge box installs.

Nothing in this package may import torch or ``edge_anomaly``: a Jetson or an Intel box
gets numpy, OpenCV and one inference engine, nothing more.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


def package_version() -> str:
    """edge-anomaly's version: the installed distribution's, else (a bare source checkout) pyproject.toml's."""
    try:
        return metadata.version("edge-anomaly")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.MULTILINE) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"
