"""Whole-image statistics that catch lighting and focus faults patch features miss.

Patch features are largely invariant to a global gain change or a soft blur, which is what
makes them good at local defects and blind to a too-dark, too-bright, shadowed or defocused
frame. A handful of cheap statistics of the model-input image, compared against the training
set's spread, covers that blind spot.
"""

from __future__ import annotations

from typing import Annotated

import cv2
import numpy as np
from pydantic import BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from runtime.image_io import to_rgb8
from runtime.roi import Region
from runtime.schema import Section

GRID = 4
LIGHTING_STATS = (
    "brightness",
    "contrast",
    "chroma_red",
    "chroma_green",
    "chroma_blue",
    *(f"shading_{row}{col}" for row in range(GRID) for col in range(GRID)),
)
BLUR_STATS = ("sharpness",)
STAT_NAMES = LIGHTING_STATS + BLUR_STATS
# The smallest spread each statistic is credited with: the size of change below which nobody
# would call a frame mis-lit or defocused. Without it, a line that repeats its lighting
# exactly would flag a scratch as a "lighting" fault because one shading cell moved by 3%.
MIN_STD = {"brightness": 0.02, "contrast": 0.01, "chroma": 0.01, "shading": 0.05, "sharpness": 0.1,
           "noise": 0.25, "blockiness": 0.02}


# What the camera did to the frame, measured at the camera's own resolution (the model input is
# too small to show a JPEG's 8x8 blocks): sensor noise in grey levels and JPEG blockiness.
CAPTURE_STATS = ("noise", "blockiness")
CAPTURE_WINDOW = 256  # capture statistics look at most this many pixels a side of the inspected region (0.3 ms)
JPEG_BLOCK = 8
# Immerkaer's noise kernel: the difference of two Laplacians, blind to linear ramps; its response to
# white noise of standard deviation s has standard deviation 6 s.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _min_std(names: tuple[str, ...] = STAT_NAMES) -> np.ndarray:
    return np.array([MIN_STD[name.split("_")[0]] for name in names])


# A shading cell with less than this share of its pixels left after an exclusion is not
# compared: what remains of it is not the same part of the scene as in the reference.
MIN_CELL_KEPT = 0.75


def image_statistics(rgb: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Statistics of one RGB uint8 image at model input size, in the order of STAT_NAMES.

    Shading cells are relative to the image mean and sharpness is the Laplacian energy
    relative to the image variance, so an exposure change moves only brightness/contrast.
    ``exclude`` (bool, image-sized) marks a local region, e.g. a defect's, to ask whether the
    rest of the frame still looks mis-lit or defocused: the shading cells it reaches into by
    more than 1 - MIN_CELL_KEPT come back as nan (no evidence either way) and sharpness is
    measured on the pixels outside it. Brightness, contrast and colour stay whole-frame
    figures: leaving out a region shifts them by what the region normally holds (a dark
    bottle centre), which would read as a lighting change of its own.
    """
    # OpenCV's reductions (one pass, float64 sums) rather than numpy's: 0.25 ms instead of 1.2 ms
    # for a 256 px input, on every frame the runtime inspects.
    pixels = rgb.astype(np.float32) * np.float32(1 / 255.0)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    gray_mean, gray_std = cv2.meanStdDev(gray)
    brightness, contrast = float(gray_mean[0, 0]), float(gray_std[0, 0])
    channel_means = np.array(cv2.mean(rgb)[:3]) / 255.0
    chroma = channel_means / max(float(channel_means.sum()), 1e-6)
    cells = cv2.resize(gray, (GRID, GRID), interpolation=cv2.INTER_AREA)
    shading = cells.reshape(-1) / max(brightness, 1e-6)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F)
    if exclude is not None and exclude.any():
        keep = ~exclude
        kept_share = cv2.resize(keep.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
        shading[kept_share.reshape(-1) < MIN_CELL_KEPT] = np.nan
        laplacian_var = float(laplacian[keep].var()) if keep.any() else np.nan
        kept_contrast = float(gray[keep].std()) if keep.any() else np.nan
    else:
        laplacian_var, kept_contrast = float(cv2.meanStdDev(laplacian)[1][0, 0]) ** 2, contrast
    sharpness = float(np.log((laplacian_var + 1e-8) / (kept_contrast**2 + 1e-8)))
    return np.array([brightness, contrast, *chroma, *shading, sharpness], dtype=np.float64)


def capture_statistics(frame: np.ndarray, region: Region | None = None, color_order: str = "RGB") -> np.ndarray:
    """(noise, blockiness) of a decoded frame's inspected ``region``, in the order of CAPTURE_STATS.

    Measured on the green channel of a window of at most CAPTURE_WINDOW pixels a side at the
    region's centre, whose corner sits on the frame's 8-pixel JPEG grid. ``noise`` is Immerkaer's
    estimate (mean absolute response of a kernel blind to smooth shading, in grey levels);
    ``blockiness`` is how much larger
    the steps between neighbouring pixels are across the grid's block borders than inside blocks
    (1: no blocks; a JPEG at quality 75 reads about 1.3).
    """
    x, y, width, height = region if region is not None else (0, 0, frame.shape[1], frame.shape[0])
    side_w, side_h = min(width, CAPTURE_WINDOW), min(height, CAPTURE_WINDOW)
    left = (x + (width - side_w) // 2) // JPEG_BLOCK * JPEG_BLOCK
    top = (y + (height - side_h) // 2) // JPEG_BLOCK * JPEG_BLOCK
    window = frame[top:top + side_h, left:left + side_w]
    # Green alone: half a Bayer sensor's pixels, and a grey conversion would average the channels' noise away.
    # Green is the middle channel in RGB and BGR alike, so an 8-bit colour frame needs no conversion.
    if window.dtype == np.uint8 and window.ndim == 3 and window.shape[2] == 3:
        green = window[:, :, 1].astype(np.float32)
    else:
        green = to_rgb8(window, color_order)[:, :, 1].astype(np.float32)
    response = cv2.filter2D(green, -1, _NOISE_KERNEL)[1:-1, 1:-1]
    noise = cv2.norm(response, cv2.NORM_L1) / response.size * np.sqrt(np.pi / 2) / 6 if response.size else 0.0
    return np.array([noise, _blockiness(green)], dtype=np.float64)


def _blockiness(gray: np.ndarray) -> float:
    """Mean step across 8-pixel block borders over the mean step inside blocks, both directions averaged."""
    ratios = []
    # OpenCV's one-pass difference and column/row means: a third of numpy's time on every frame inspected.
    across = cv2.reduce(cv2.absdiff(gray[:, 1:], gray[:, :-1]), 0, cv2.REDUCE_AVG, dtype=cv2.CV_64F).ravel()
    down = cv2.reduce(cv2.absdiff(gray[1:], gray[:-1]), 1, cv2.REDUCE_AVG, dtype=cv2.CV_64F).ravel()
    for steps in (across, down):
        if steps.size < 2 * JPEG_BLOCK:
            continue
        border = np.zeros(steps.size, bool)
        border[JPEG_BLOCK - 1::JPEG_BLOCK] = True  # the step from a block's last pixel to the next block's first
        ratios.append(float(steps[border].mean() / max(float(steps[~border].mean()), 1e-6)))
    return float(np.mean(ratios)) if ratios else 1.0


# A vector of float64 in memory (what the checks compute with), a list of numbers in JSON.
FloatVector = Annotated[np.ndarray, BeforeValidator(lambda values: np.asarray(values, dtype=np.float64)),
                        PlainSerializer(lambda array: array.tolist()),
                        WithJsonSchema({"type": "array", "items": {"type": "number"}})]


class GlobalStats(Section):
    """The training set's mean and spread of each statistic (STAT_NAMES, or CAPTURE_STATS for the camera's):
    the model card's and the manifest's ``global_stats`` and ``capture_stats`` as they are computed with."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    names: tuple[str, ...]
    mean: FloatVector
    std: FloatVector

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalStats) and self.names == other.names \
            and np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)

    __hash__ = None  # the arrays are not hashable

    @classmethod
    def fit(cls, stats: np.ndarray, names: tuple[str, ...] = STAT_NAMES) -> GlobalStats:
        """Reference from an (images, names) array of normal images."""
        if stats.ndim != 2 or stats.shape[1] != len(names):
            raise ValueError(f"expected (n, {len(names)}) statistics, got {stats.shape}")
        return cls(mean=stats.mean(axis=0), std=np.maximum(stats.std(axis=0), _min_std(names)), names=tuple(names))

    def require_names(self, names: tuple[str, ...]) -> GlobalStats:
        """``self`` when it holds ``names`` in that order, else a ValueError (another version's statistics)."""
        if tuple(self.names) != tuple(names):
            raise ValueError(f"statistic names {list(self.names)} do not match this version of edge-anomaly "
                             f"({list(names)})")
        if self.mean.shape != (len(names),) or self.std.shape != (len(names),):
            raise ValueError(f"expected {len(names)} means and spreads, got {self.mean.shape} and {self.std.shape}")
        return self

    def capture_deviation(self, stats: np.ndarray) -> dict[str, np.ndarray]:
        """{"noise", "compression"} raw scores for (n, CAPTURE_STATS) statistics: only more noise and
        stronger blocks than normal count (a cleaner frame is no fault)."""
        z = (np.atleast_2d(stats) - self.mean) / self.std
        return {"noise": np.maximum(z[:, 0], 0.0), "compression": np.maximum(z[:, 1], 0.0)}

    def deviation_scores(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lighting, blur) raw scores for (n, STAT_NAMES) statistics.

        Lighting is the largest absolute z-score over the lighting statistics; blur counts
        only a loss of sharpness. A nan statistic (left out, see :func:`image_statistics`)
        counts as no deviation.
        """
        z = np.nan_to_num((np.atleast_2d(stats) - self.mean) / self.std, nan=0.0)
        n_lighting = len(LIGHTING_STATS)
        lighting = np.abs(z[:, :n_lighting]).max(axis=1)
        blur = np.maximum(-z[:, n_lighting], 0.0)
        return lighting, blur
