"""Reading images from disk into the one pixel format the rest of the code uses: RGB uint8.

Cameras and datasets hand over grayscale, 16-bit, BGRA and palette images; every path into
a model goes through :func:`to_rgb8` so training and the edge runtime see identical pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 50_000_000  # the default pixel limit for images from outside (by header, before decoding)


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


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            offset += 2
            continue
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return width, height
        offset += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    found: dict[int, int] = {}
    for index in range(count):
        entry = data[ifd + 2 + 12 * index:ifd + 14 + 12 * index]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            short = kind == 3
            found[tag] = struct.unpack(order + ("H" if short else "I"), entry[8:10] if short else entry[8:12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) read from the first bytes of a PNG, JPEG, BMP or TIFF file, without decoding it."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(head)
        if head[:2] == b"BM":
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(head)
    except struct.error:
        return None
    return None


def check_pixels(path: Path, data: np.ndarray, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` (a decompression bomb: a 1 MB PNG can
    declare 20000x20000 and decode to gigabytes); also one whose size the header does not give."""
    size = header_size(data[:1 << 18].tobytes())
    if size is None:
        raise ImageReadError(f"{path}: image size not found in the header; refused unread (limit {max_pixels} px)")
    width, height = size
    if width * height > max_pixels:
        raise ImageReadError(f"{path}: {width}x{height} = {width * height / 1e6:.1f} MP exceeds the limit of "
                             f"{max_pixels / 1e6:.1f} MP; refused without decoding")


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8, raising :class:`ImageReadError` naming the file.

    With ``max_pixels``, the size declared in the header is checked before anything is decoded.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if max_pixels is not None:
        check_pixels(path, data, max_pixels)
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
