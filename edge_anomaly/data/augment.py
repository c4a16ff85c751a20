"""TEMPORARY stub until the capture-pipeline branch lands (replaced on merge)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

AUGMENTATIONS = ("jpeg", "video")


def compressed_copies(images: np.ndarray, kinds: Sequence[str], seed: int) -> np.ndarray:
    out = []
    for kind in kinds:
        for image in images:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
            out.append(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    return np.stack(out) if out else images[:0]
