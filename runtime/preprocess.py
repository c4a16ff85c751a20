"""Frame to model input and heatmap back to frame: the same resize in training, export calibration and at the edge.

A frame may be inspected only in part: a region of interest ``roi = [x, y, w, h]`` in the
original frame's pixels, then optionally a centre crop, a centred square whose side is
``center_crop`` (0 < fraction <= 1) times the shorter side of the ROI (or of the frame). The
model sees that region resized to its input; its heatmap is mapped back onto that region of
the full frame and is 0 (clearly normal) everywhere else.
"""

from __future__ import annotations

import cv2
import numpy as np

from runtime.image_io import to_rgb8
from runtime.roi import Region


def resize_to_input(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a frame to the model's (height, width), ignoring aspect ratio.

    Area interpolation when shrinking keeps small defects from aliasing away; linear when growing.
    A large frame first shrinks by a whole factor per axis, OpenCV's fast exact path for area
    averaging (a 1080p frame: 3 ms instead of 8); the few rows and columns beyond a multiple of
    that factor, less than one model pixel, are left out.
    """
    height, width = size_hw
    if rgb.shape[:2] == (height, width):
        return rgb
    shrinking = rgb.shape[0] * rgb.shape[1] > height * width
    if not shrinking:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    factor_y, factor_x = max(1, rgb.shape[0] // height), max(1, rgb.shape[1] // width)
    if factor_y * factor_x >= 4:
        rows, cols = rgb.shape[0] // factor_y, rgb.shape[1] // factor_x
        rgb = cv2.resize(rgb[:rows * factor_y, :cols * factor_x], (cols, rows), interpolation=cv2.INTER_AREA)
        if rgb.shape[:2] == (height, width):  # a whole multiple of the input (512 -> 256): done
            return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def batch_inputs(frames: list[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """Stack RGB frames into the engines' input: uint8 NHWC at the model's size."""
    return np.stack([resize_to_input(frame, size_hw) for frame in frames])


def inspected_region(frame_hw: tuple[int, int], roi: Region | None = None,
                     center_crop: float | None = None) -> Region:
    """The part of a ``frame_hw`` frame the model sees: the ROI, then the centre crop inside it."""
    height, width = frame_hw
    x, y, w, h = (0, 0, width, height) if roi is None else roi
    if x + w > width or y + h > height:
        raise ValueError(f"roi {[x, y, w, h]} lies outside the {width}x{height} frame")
    if center_crop is not None and center_crop < 1.0:
        side = max(1, round(min(w, h) * center_crop))
        x, y, w, h = x + (w - side) // 2, y + (h - side) // 2, side, side
    return x, y, w, h


def check_frame(frame: np.ndarray) -> None:
    """Refuse what no conversion can make a picture of, naming shape and type."""
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise ValueError(f"frame must be a non-empty numpy array, got {type(frame).__name__}"
                         + (f" of shape {frame.shape}" if isinstance(frame, np.ndarray) else ""))
    channels_ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))
    if not channels_ok or frame.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f"unsupported frame: shape {frame.shape}, dtype {frame.dtype} (expected HxW, HxWx1, HxWx3 "
                         "or HxWx4 of uint8, uint16 or float)")


def frame_to_input(frame: np.ndarray, size_hw: tuple[int, int], color_order: str = "RGB",
                   region: Region | None = None) -> np.ndarray:
    """The model input (RGB uint8 at ``size_hw``) for one decoded frame of any size, order and depth.

    Crops and resizes before converting colour and depth, so a 1080p frame costs one resize
    rather than full-size conversions. Float frames are converted first: their scale (0..1 or
    0..255) is judged on the whole frame. The frame must pass :func:`check_frame`.
    """
    if frame.dtype.kind == "f":
        frame, color_order = to_rgb8(frame, color_order), "RGB"
    if region is not None:
        x, y, w, h = region
        frame = frame[y:y + h, x:x + w]
    return to_rgb8(resize_to_input(frame, size_hw), color_order)


def heatmap_to_frame(heatmap: np.ndarray, frame_hw: tuple[int, int], region: Region | None = None) -> np.ndarray:
    """Map an input-size heatmap back onto the original frame: into ``region``, 0 elsewhere."""
    height, width = frame_hw
    if region is None or region == (0, 0, width, height):
        if heatmap.shape == (height, width):
            return heatmap
        return cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    x, y, w, h = region
    full = np.zeros((height, width), np.float32)
    full[y:y + h, x:x + w] = heatmap_to_frame(heatmap, (h, w))
    return full
