"""Real data shared by the runtime tests (importable by name, unlike a conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The shared data beside the checkout.
BOTTLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad" / "bottle"


def read_rgb(paths: list[Path]) -> list[np.ndarray]:
    from runtime.image_io import read_image

    return [read_image(path) for path in paths]
