"""The real data beside the checkout (``../shared/data``, see its README) and how the tests read it: one place for
the paths that the fixtures (tests/conftest.py, tests/runtime/conftest.py) and the tests use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
BOTTLE = SHARED_DATA / "mvtec_ad" / "bottle"


def real_category(path: Path) -> Path:
    """The category folder, or skip the test with the reason when the shared data is absent."""
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"real data not present at {path} (see ../shared/data/README.md)")
    return path


def read_rgb(paths: list[Path]) -> list[np.ndarray]:
    from runtime.image_io import read_image

    return [read_image(path) for path in paths]
