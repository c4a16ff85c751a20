"""Frame to model input: the same resize in training, export calibration and at the edge."""

from __future__ import annotations

import cv2
import numpy as np


def resize_to_input(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 frame to the model's (height, width), ignoring aspect ratio.

    Area interpolation when shrinking keeps small defects from aliasing away; linear when growing.
    """
    height, width = size_hw
    if rgb.shape[:2] == (height, width):
        return rgb
    shrinking = rgb.shape[0] * rgb.shape[1] > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def batch_inputs(frames: list[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """Stack RGB frames into the engines' input: uint8 NHWC at the model's size."""
    return np.stack([resize_to_input(frame, size_hw) for frame in frames])


def heatmap_to_frame(heatmap: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Map an input-size heatmap back onto the original frame's resolution."""
    height, width = frame_hw
    if heatmap.shape == (height, width):
        return heatmap
    return cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
