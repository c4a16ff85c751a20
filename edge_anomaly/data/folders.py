"""Image folders: training sets of normal images and MVTec-style test sets with masks.

A training set is any folder of images (or an MVTec category root, whose ``train/good`` is
used). A test set follows MVTec AD: ``test/good``, ``test/<defect>`` and
``ground_truth/<defect>/<stem>_mask.png``. Unreadable files are skipped with a warning that
names them; nothing else is silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.global_stats import CAPTURE_STATS, capture_statistics
from runtime.image_io import ImageReadError, list_images, read_image
from runtime.preprocess import frame_to_input, inspected_region
from runtime.roi import Region

log = logging.getLogger(__name__)


def training_folder(data: str | Path) -> Path:
    """The folder holding the normal training images for ``data``."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"training data folder not found: {data}")
    mvtec_train = data / "train" / "good"
    return mvtec_train if mvtec_train.is_dir() else data


def crop_region(image_hw: tuple[int, int], roi: Region | None, center_crop: float | None, name: object) -> Region:
    """The inspected region of one image, or a ValueError naming the image when the ROI does not fit it."""
    try:
        return inspected_region(image_hw, roi, center_crop)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def load_inputs(paths: Iterable[Path], size_hw: tuple[int, int], advance: Callable[[], None] | None = None,
                roi: Region | None = None, center_crop: float | None = None) -> tuple[np.ndarray, list[Path]]:
    """Read, crop to the inspected region and resize images to the model input.

    Returns (uint8 NHWC, paths that loaded); the same steps as the runtime's, so training,
    evaluation, export calibration and the edge all see the same pixels.
    """
    images, _, kept = load_inputs_with_capture(paths, size_hw, advance, roi, center_crop)
    return images, kept


def load_inputs_with_capture(paths: Iterable[Path], size_hw: tuple[int, int],
                             advance: Callable[[], None] | None = None, roi: Region | None = None,
                             center_crop: float | None = None) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """:func:`load_inputs` and each image's capture statistics (noise, blockiness at its own resolution)."""
    images, capture, kept = [], [], []
    for path in paths:
        try:
            rgb = read_image(path)
            region = crop_region(rgb.shape[:2], roi, center_crop, path)
            images.append(frame_to_input(rgb, size_hw, region=region))
            capture.append(capture_statistics(rgb, region))
            kept.append(path)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
        if advance is not None:
            advance()
    if not images:
        return np.zeros((0, *size_hw, 3), dtype=np.uint8), np.zeros((0, len(CAPTURE_STATS))), kept
    return np.stack(images), np.stack(capture), kept


def require_images(folder: Path, count: int, minimum: int) -> None:
    if count < minimum:
        raise ValueError(f"{folder}: found {count} usable images, need at least {minimum}")


@dataclass(frozen=True)
class TestSample:
    path: Path
    defect: str  # "good" or the defect folder name
    mask_path: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == "good" else 1


def mvtec_test_set(root: str | Path) -> list[TestSample]:
    """All test images of an MVTec-layout category, with their masks where present."""
    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{root}: no test/ folder (expected the MVTec layout: test/good, test/<defect>)")
    samples = []
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        for path in list_images(defect_dir):
            mask = root / "ground_truth" / defect_dir.name / f"{path.stem}_mask.png"
            samples.append(TestSample(path, defect_dir.name, mask if mask.is_file() else None))
    if not samples:
        raise ValueError(f"{test}: no test images found")
    return samples


def read_mask(path: Path, size_hw: tuple[int, int], roi: Region | None = None,
              center_crop: float | None = None) -> np.ndarray:
    """A ground-truth mask as bool at (height, width), cropped like its image and nearest-neighbour resized."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageReadError(f"{path}: mask is not a decodable image")
    x, y, w, h = crop_region(mask.shape[:2], roi, center_crop, path)
    mask = cv2.resize(mask[y:y + h, x:x + w], (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    return mask > 0
