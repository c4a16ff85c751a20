"""Reading images from disk into the one pixel format the rest of the code uses: RGB uint8.

Cameras and datasets hand over grayscale, 16-bit, BGRA and palette images; every path into
a model goes through :func:`to_rgb8` so training and the edge runtime see identical pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def to_rgb8(frame: np.ndarray, color_order: str = "BGR") -> np.ndarray:
    """Convert any decoded frame (gray, 16-bit, float, 3/4 channels) to contiguous RGB uint8.

    16-bit data is scaled by its full range (/257) rather than per image, so an
    under-exposed frame stays dark and the lighting check can see it.
    """
    if frame is None or frame.size == 0:
        raise ValueError("empty frame")
    if frame.dtype == np.uint16:
        frame = (frame.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif frame.dtype in (np.float32, np.float64):
        scale = 255.0 if frame.max(initial=0.0) <= 1.0 else 1.0
        frame = np.clip(frame * scale, 0, 255).round().astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return np.ascontiguousarray(cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"unsupported frame shape {frame.shape}")
    order = color_order.upper()
    if order not in ("BGR", "RGB"):
        raise ValueError(f"color_order must be 'BGR' or 'RGB', got {color_order!r}")
    if frame.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB
        return np.ascontiguousarray(cv2.cvtColor(frame, code))
    if order == "BGR":
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return np.ascontiguousarray(frame)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8, raising :class:`ImageReadError` naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if frame is None:
        raise ImageReadError(f"{path}: not a decodable image (corrupt or unsupported format)")
    try:
        return to_rgb8(frame, "BGR")
    except ValueError as exc:
        raise ImageReadError(f"{path}: {exc}") from exc


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by name so runs are reproducible."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB image (PNG or JPEG by suffix), creating the folder; raises on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise OSError(f"{path}: cannot encode image")
    encoded.tofile(path)
