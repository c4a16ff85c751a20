"""What every template shares: common hyperparameters and the scorer contract.

A template is a hyperparameter model (pydantic, validated in one place) and a scorer: an
``nn.Module`` that turns backbone features into a patch score map and an image score. The
scorer is part of the exported graph, so it must stay traceable (no data-dependent Python).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import nn

from edge_anomaly.backbones import BACKBONES, LAYER_NAMES
from edge_anomaly.data.capture import CaptureTolerance
from runtime.schema import StrictModel


class TemplateParams(StrictModel):
    """Hyperparameters common to all templates."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    input_size: tuple[int, int] | None = Field(
        None, description="model input (height, width), multiples of 32; default: chosen from the training images, "
        "keeping their aspect ratio within max_input_pixels"
    )
    max_input_pixels: int = Field(
        256 * 256, ge=64 * 64, description="pixel budget of the automatic input size (height x width)"
    )
    backbone: str = Field("efficientnet-lite0", description=f"feature extractor: {', '.join(BACKBONES)}")
    backbone_weights: str | None = Field(
        None, description="local weights file (.safetensors or .pth) for backbones without packaged weights"
    )
    layers: list[str] = Field(description=f"backbone stages whose features are used: {', '.join(LAYER_NAMES)}")
    roi: tuple[int, int, int, int] | None = Field(
        None, description="inspect only this rectangle [x, y, width, height] of every image, in image pixels"
    )
    center_crop: float | None = Field(
        None, gt=0.0, le=1.0, description="inspect a centred square of this fraction of the shorter side (after roi)"
    )
    augment: list[Literal["jpeg", "video"]] = Field(
        [], description="also train on compressed copies of the training images (JPEG, H.264/MPEG-4 re-encoding), "
        "so that the line camera's compression artefacts read as normal"
    )
    capture_tolerance: CaptureTolerance = Field(
        default_factory=CaptureTolerance, description="the camera variation (noise, JPEG, exposure, shift) read as "
        "normal: training adds copies varied within it, and the noise and compression checks flag frames beyond it"
    )
    false_alarm_rate: float = Field(
        0.01, gt=0.0, lt=0.5, description="target share of good parts flagged: sets the threshold"
    )
    calibration_folds: int = Field(
        10, ge=2, le=20, description="k-fold over the training images: each is scored by a model that did not see it"
    )
    holdout_fraction: float = Field(
        0.1, ge=0.02, le=0.5, description="share of training images held out to calibrate templates without k-fold"
    )
    global_checks: bool = Field(True, description="also flag lighting and blur departures from the training set")
    global_check_margin: float = Field(
        1.0, ge=0.0, description="lighting and blur thresholds: the 99th percentile of the training images' "
        "deviation plus this many times its distance to the median; only clear departures count, since normal "
        "frames already vary in exposure"
    )
    heatmap_sigma: float = Field(4.0, ge=0.0, description="Gaussian smoothing of the heatmap, in input pixels")
    batch_size: int = Field(8, ge=1, description="images per forward pass while fitting and evaluating")
    seed: int = Field(0, description="seed for the hold-out split, projections and sampling")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and any(side < 64 or side % 32 for side in value):
            raise ValueError(f"input_size {value}: each side must be a multiple of 32 and at least 64")
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; choose from {', '.join(BACKBONES)}")
        return value

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in LAYER_NAMES]
        if unknown or not value:
            raise ValueError(f"layers {unknown or value} invalid; choose from {', '.join(LAYER_NAMES)}")
        return value

    @field_validator("roi")
    @classmethod
    def _roi_size(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None and (value[0] < 0 or value[1] < 0 or value[2] < 32 or value[3] < 32):
            raise ValueError(f"roi {list(value)}: x and y must be >= 0, width and height at least 32 pixels")
        return value

    @model_validator(mode="after")
    def _blur_fits(self) -> TemplateParams:
        if self.input_size is not None and int(4.0 * self.heatmap_sigma + 0.5) >= min(self.input_size):
            raise ValueError(f"heatmap_sigma={self.heatmap_sigma} is too large for input_size {self.input_size}")
        return self


class Scorer(nn.Module):
    """Features in, (patch score map [N, 1, h, w], image score [N]) out.

    Subclasses implement ``embed`` (features to per-position vectors, [N, C, h, w]), ``fit``
    (learn normal from the embeddings of the training images) and ``score``.
    """

    params_type: ClassVar[type[TemplateParams]]
    params: TemplateParams
    feature_shapes: list[tuple[int, int, int]]
    # True for templates trained by gradient descent on the images themselves: training calls
    # ``fit_images(images, extractor, progress)`` instead of embedding the images and ``fit``.
    fits_on_images: ClassVar[bool] = False
    progress: Callable[[int, int], None] | None = None  # (done, total) units of fitting work, for a bar
    # Embeddings each training image brought (itself, its compressed and its varied copies): what a fit sizes by
    # the images rather than by their copies (PatchCore's bank) divides by it.
    copies_per_image: float = 1.0
    training_info: dict | None = None  # what a trained template learned on the way (steps, losses): kept in model.json

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, embeddings: torch.Tensor) -> None:
        raise NotImplementedError

    def score(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def fold_scores(self, embeddings: torch.Tensor, folds: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Image score of every training image from a scorer fitted without its fold (k-fold).

        These are honest normal scores for calibration: no image is judged by a model that
        learnt it. The default refits a fresh scorer per fold; templates with a cheaper exact
        way (masking a memory bank) override it.
        """
        scores = np.empty(len(embeddings), np.float64)
        for fold in np.unique(folds):
            held = np.flatnonzero(folds == fold)
            scorer = type(self)(self.params, self.feature_shapes)
            scorer.fit(embeddings[np.flatnonzero(folds != fold)])
            scores[held] = batched_image_scores(scorer, embeddings[held], batch_size)
        return scores

    def fit_images(self, images: np.ndarray, extractor: nn.Module, progress) -> None:
        """Fit on uint8 NHWC normal images (only templates with ``fits_on_images``)."""
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor], pixels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixels`` (float NCHW RGB in 0..1) is the graph's input, for scorers that look at it."""
        return self.score(self.embed(features))

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Install fitted buffers from a saved state, whatever their sizes (a memory bank's
        length is only known after fitting)."""
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"scorer state has {sorted(state)}, expected {sorted(expected)}")
        for name, tensor in state.items():
            setattr(self, name, tensor)


def batched_image_scores(scorer: Scorer, embeddings: torch.Tensor, batch_size: int) -> np.ndarray:
    return np.concatenate([scorer.score(embeddings[start:start + batch_size])[1].double().numpy()
                           for start in range(0, len(embeddings), batch_size)])


def aligned_concat(features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """Resize every feature map to ``grid`` (bilinear) and stack them along channels."""
    resized = [
        f if tuple(f.shape[-2:]) == grid
        else nn.functional.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        for f in features
    ]
    return torch.cat(resized, dim=1)
