"""Turning a normalised anomaly map into pictures an operator can read.

Heatmaps here are normalised scores (0..1, 0.5 = the calibrated decision threshold) and all
images are RGB uint8. Only numpy and OpenCV are used, so the edge runtime can draw its own
overlays without the training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from runtime.result import Result

_CONTOUR_RGB = (255, 255, 255)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """JET colours for a normalised map, clipped to [0, 1] so the colour scale is the same for every
    image (blue = clearly normal, green = at the threshold, red = clearly anomalous)."""
    levels = np.round(np.clip(np.nan_to_num(heatmap), 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


TINT_FROM, TINT_FULL = 0.25, 0.5  # normalised heat where the tint starts, and where it reaches ``alpha``


def overlay_heatmap(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the colourised map over the image where it is warm; the map is resized to the image if needed.

    The tint grows from nothing at TINT_FROM to ``alpha`` at the threshold (TINT_FULL) and above, so
    the clearly normal part of the picture keeps its own colours and stays readable, and what is
    near or past the threshold stands out (a uniform blend tinted the whole part blue)."""
    heat = _fit(heatmap, image_rgb.shape[:2])
    weight = np.float32(alpha) * np.clip((np.nan_to_num(heat) - TINT_FROM) / (TINT_FULL - TINT_FROM), 0.0, 1.0)
    return cv2.blendLinear(np.ascontiguousarray(image_rgb), colorize(heat), 1.0 - weight, weight)


def anomaly_regions(
    heatmap: np.ndarray, threshold: float = 0.5, min_area: int = 16
) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x, y, w, h) in heatmap pixels of the 8-connected regions >= threshold,
    largest area first; regions under ``min_area`` pixels are dropped as speckle."""
    binary = (np.asarray(heatmap) >= threshold).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    kept = [row for row in stats[1:] if row[cv2.CC_STAT_AREA] >= min_area]
    kept.sort(key=lambda row: row[cv2.CC_STAT_AREA], reverse=True)
    return [(int(x), int(y), int(w), int(h)) for x, y, w, h, _ in kept]


def draw_regions(image_rgb: np.ndarray, heatmap: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Outline the regions >= threshold on a copy of the image, so the defect stays visible
    under the line (unlike a filled overlay)."""
    binary = (_fit(heatmap, image_rgb.shape[:2]) >= threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(image_rgb.shape[:2]) / 200))
    return cv2.drawContours(image_rgb.copy(), contours, -1, _CONTOUR_RGB, thickness)


def annotate(frame: np.ndarray, result: Result) -> np.ndarray:
    """Heatmap overlay with the anomalous regions outlined and the verdict written on it."""
    picture = draw_regions(overlay_heatmap(frame, result.heatmap), result.heatmap)
    text = f"{result.label} {result.normalized_score:.2f}" + (f" ({result.kind})" if result.kind else "")
    colour = (255, 60, 60) if result.is_anomalous else (60, 220, 60)
    scale = max(0.4, frame.shape[1] / 800)
    cv2.putText(picture, text, (6, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                max(1, round(2 * scale)), cv2.LINE_AA)
    return picture


def thumbnail(
    image_rgb: np.ndarray, box: tuple[int, int, int, int], size: int = 128, pad: float = 0.25
) -> np.ndarray:
    """Crop around ``box`` (x, y, w, h) with ``pad`` times its size on each side, clipped to the
    image, and resize so the long side is ``size``: a defect close-up for dashboards and alerts."""
    height, width = image_rgb.shape[:2]
    x, y, w, h = box
    pad_x, pad_y = round(w * pad), round(h * pad)
    x0 = min(max(0, x - pad_x), width - 1)
    y0 = min(max(0, y - pad_y), height - 1)
    x1 = max(min(width, x + w + pad_x), x0 + 1)
    y1 = max(min(height, y + h + pad_y), y0 + 1)
    crop = image_rgb[y0:y1, x0:x1]
    scale = size / max(crop.shape[:2])
    new_size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(crop, new_size, interpolation=interpolation)


def _fit(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map as float32 at ``shape`` (height, width), resized only when it differs."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape == shape:
        return heatmap
    return cv2.resize(heatmap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
