"""Whole-image statistics that catch lighting and focus faults patch features miss.

Patch features are largely invariant to a global gain change or a soft blur, which is what
makes them good at local defects and blind to a too-dark, too-bright, shadowed or defocused
frame. A handful of cheap statistics of the model-input image, compared against the training
set's spread, covers that blind spot.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
MIN_STD = {"brightness": 0.02, "contrast": 0.01, "chroma": 0.01, "shading": 0.05, "sharpness": 0.1}


def _min_std() -> np.ndarray:
    return np.array([MIN_STD[name.split("_")[0]] for name in STAT_NAMES])


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
    pixels = rgb.astype(np.float32) / 255.0
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    brightness = float(gray.mean())
    contrast = float(gray.std())
    channel_means = pixels.reshape(-1, 3).mean(axis=0)
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
        laplacian_var, kept_contrast = float(laplacian.var()), contrast
    sharpness = float(np.log((laplacian_var + 1e-8) / (kept_contrast**2 + 1e-8)))
    return np.array([brightness, contrast, *chroma, *shading, sharpness], dtype=np.float64)


@dataclass(frozen=True)
class GlobalStatsReference:
    """The training set's mean and spread of each statistic."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, stats: np.ndarray) -> GlobalStatsReference:
        """Reference from an (images, STAT_NAMES) array of normal images."""
        if stats.ndim != 2 or stats.shape[1] != len(STAT_NAMES):
            raise ValueError(f"expected (n, {len(STAT_NAMES)}) statistics, got {stats.shape}")
        return cls(mean=stats.mean(axis=0), std=np.maximum(stats.std(axis=0), _min_std()))

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

    def to_dict(self) -> dict:
        return {"names": list(STAT_NAMES), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> GlobalStatsReference:
        if list(data.get("names", [])) != list(STAT_NAMES):
            raise ValueError("global_stats: statistic names do not match this version of edge-anomaly")
        return cls(mean=np.asarray(data["mean"], dtype=np.float64), std=np.asarray(data["std"], dtype=np.float64))
