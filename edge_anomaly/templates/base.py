"""What every template shares: common hyperparameters and the scorer contract.

A template is a hyperparameter model (pydantic, validated in one place) and a scorer: an
``nn.Module`` that turns backbone features into a patch score map and an image score. The
scorer is part of the exported graph, so it must stay traceable (no data-dependent Python).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from edge_anomaly.backbones import BACKBONES, LAYER_NAMES


class TemplateParams(BaseModel):
    """Hyperparameters common to all templates."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    input_size: tuple[int, int] = Field((256, 256), description="model input (height, width); multiples of 32")
    backbone: str = Field("efficientnet-lite0", description=f"feature extractor: {', '.join(BACKBONES)}")
    backbone_weights: str | None = Field(
        None, description="local weights file (.safetensors or .pth) for backbones without packaged weights"
    )
    layers: list[str] = Field(description=f"backbone stages whose features are used: {', '.join(LAYER_NAMES)}")
    holdout_fraction: float = Field(
        0.1, ge=0.02, le=0.5, description="share of training images held out to calibrate the threshold"
    )
    threshold_quantile: float = Field(0.99, gt=0.5, le=1.0, description="quantile of held-out normal scores")
    threshold_margin: float = Field(
        0.25, ge=0.0, description="threshold = quantile + margin * (quantile - median) of held-out scores"
    )
    global_checks: bool = Field(True, description="also flag lighting and blur departures from the training set")
    global_check_margin: float = Field(
        1.0, ge=0.0, description="margin of the lighting and blur thresholds (as threshold_margin): only clear "
        "departures count, since normal frames already vary in exposure"
    )
    heatmap_sigma: float = Field(4.0, ge=0.0, description="Gaussian smoothing of the heatmap, in input pixels")
    batch_size: int = Field(8, ge=1, description="images per forward pass while fitting and evaluating")
    seed: int = Field(0, description="seed for the hold-out split, projections and sampling")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(side < 64 or side % 32 for side in value):
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

    @model_validator(mode="after")
    def _blur_fits(self) -> TemplateParams:
        if int(4.0 * self.heatmap_sigma + 0.5) >= min(self.input_size):
            raise ValueError(f"heatmap_sigma={self.heatmap_sigma} is too large for input_size {self.input_size}")
        return self


class Scorer(nn.Module):
    """Features in, (patch score map [N, 1, h, w], image score [N]) out.

    Subclasses implement ``embed`` (features to per-position vectors, [N, C, h, w]), ``fit``
    (learn normal from the embeddings of the training images) and ``score``.
    """

    params_type: ClassVar[type[TemplateParams]]
    # True for templates trained by gradient descent on the images themselves: training calls
    # ``fit_images(images, extractor, progress)`` instead of embedding the images and ``fit``.
    fits_on_images: ClassVar[bool] = False
    progress: Callable[[int, int], None] | None = None  # (done, total) units of fitting work, for a bar

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, embeddings: torch.Tensor) -> None:
        raise NotImplementedError

    def score(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

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


def aligned_concat(features: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """Resize every feature map to ``grid`` (bilinear) and stack them along channels."""
    resized = [
        f if tuple(f.shape[-2:]) == grid
        else nn.functional.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        for f in features
    ]
    return torch.cat(resized, dim=1)
