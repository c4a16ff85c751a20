"""What every template shares: common hyperparameters, the scorer contract and the registry's record.

A template is a package ``edge_anomaly/templates/<name>/``: a hyperparameter model (pydantic,
validated in one place) and a scorer, an ``nn.Module`` that turns backbone features into a
patch score map and an image score. The scorer is part of the exported graph, so it must stay
traceable (no data-dependent Python). A scorer is one of two kinds, each a base class here:
:class:`EmbeddingScorer` (fitted on backbone embeddings, calibrated by k-fold) or
:class:`ImageTrainedScorer` (trained on the images, calibrated on a held-out share);
:class:`MemoryBankScorer` is the embedding kind whose normal model new images can be appended
to (``edge-anomaly update``). What the rest of the code asks of a template is declared on
these classes, so no module outside ``templates/`` branches on a template's name:

* the graph (``graph.py``): ``grid``, ``forward``;
* fitting and calibration (``training.py``): ``fit_training`` (``fit_images`` alone: autoconfig, which
  shares one fit between candidates that differ only in ``scoring_params``);
* loading (``model.py``): ``TemplateParams.migrate``, ``load_fitted``;
* export (``exporters/``): ``int8_parts``, ``limit_tensor_elements``; a matrix product whose
  result reaches an arg-min or arg-max (an index the scorer picks) always stays in float;
* update (``update.py``): being a :class:`MemoryBankScorer`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import nn

from edge_anomaly.backbones import BACKBONES, LAYER_NAMES
from edge_anomaly.data.capture import CaptureTolerance
from runtime.roi import CenterCrop, Roi
from runtime.schema import StrictModel


class TemplateParams(StrictModel):
    """Hyperparameters common to all templates."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)
    # Hyperparameters of earlier versions that no longer exist (the threshold now holds a false-alarm rate).
    retired_params: ClassVar[tuple[str, ...]] = ("threshold_quantile", "threshold_margin")
    # Hyperparameters a template added later, with the value that models saved before them were built with.
    added_params: ClassVar[dict[str, Any]] = {}

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
    roi: Roi | None = Field(
        None, description="inspect only this rectangle [x, y, width, height] of every image, in image pixels"
    )
    center_crop: CenterCrop | None = Field(
        None, description="inspect a centred square of this fraction of the shorter side (after roi)"
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
    seed: int = Field(0, description="seed for the hold-out split, projections, sampling and starting weights")

    @classmethod
    def migrate(cls, saved: dict) -> dict:
        """Saved hyperparameters with retired ones dropped and added ones at their old value, so older model
        folders still load as they were trained."""
        kept = {key: value for key, value in saved.items() if key not in cls.retired_params}
        return {**cls.added_params, **kept}

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
    def _roi_size(cls, value: Roi | None) -> Roi | None:
        if value is not None and (value[2] < 32 or value[3] < 32):
            raise ValueError(f"roi {list(value)}: width and height must be at least 32 pixels to train on")
        return value

    @model_validator(mode="after")
    def _blur_fits(self) -> TemplateParams:
        if self.input_size is not None and int(4.0 * self.heatmap_sigma + 0.5) >= min(self.input_size):
            raise ValueError(f"heatmap_sigma={self.heatmap_sigma} is too large for input_size {self.input_size}")
        return self


class Scorer(nn.Module, ABC):
    """Features in, (patch score map [N, 1, ``grid``], image score [N]) out.

    Subclass :class:`EmbeddingScorer` or :class:`ImageTrainedScorer`, not this class: they say
    how a template fits and is calibrated.
    """

    params_type: ClassVar[type[TemplateParams]]  # the template's hyperparameters (the registry reads them here)
    # Graph parts (exporters.graph_parts.PARTS) an INT8 export quantises unless told otherwise, chosen by
    # measurement on MVTec bottle (bench/export.py). The scorer takes INT8 only at its matrix products' inputs,
    # distances accumulate in float: for PatchCore that product is most of the run time.
    int8_parts: ClassVar[tuple[str, ...]] = ("backbone", "scorer")
    # Hyperparameters read only when scoring, never when fitting: candidates that differ in these alone can share
    # one fitted scorer (automatic configuration).
    scoring_params: ClassVar[tuple[str, ...]] = ()
    params: TemplateParams
    feature_shapes: list[tuple[int, int, int]]  # (channels, height, width) of each backbone stage used
    grid: tuple[int, int]  # (height, width) of the patch score map: the graph upsamples it to the input size
    # Embeddings each training image brought (itself, its compressed and its varied copies): what a fit sizes by
    # the images rather than by their copies (PatchCore's bank) divides by it.
    copies_per_image: float = 1.0
    training_info: dict | None = None  # what a trained template learned on the way (steps, losses): kept in model.json

    def __init__(self, params: TemplateParams, feature_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.params = params
        self.feature_shapes = feature_shapes
        self.grid = tuple(feature_shapes[0][1:])

    @property
    def channels(self) -> int:
        """Channels of all used stages together."""
        return sum(shape[0] for shape in self.feature_shapes)

    @abstractmethod
    def forward(self, features: list[torch.Tensor], pixels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixels`` (float NCHW RGB in 0..1) is the graph's input, for scorers that look at it."""

    @abstractmethod
    def fit_images(self, images: np.ndarray, extractor: nn.Module, progress) -> None:
        """Fit on uint8 NHWC normal images, without calibrating (a quick trial such as autoconfig's)."""

    @abstractmethod
    def fit_training(self, extractor: nn.Module, images: np.ndarray, folds: np.ndarray, calibrated: np.ndarray,
                     progress) -> tuple[np.ndarray, float]:
        """Fit on uint8 NHWC normal ``images`` (``folds``: each one's calibration fold) and return (the raw
        score of every ``calibrated`` image from a scorer that did not learn it, ``time.perf_counter()`` when
        the fit ended and calibration began)."""

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Install fitted buffers from a saved state, whatever their sizes (a memory bank's
        length is only known after fitting)."""
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"scorer state has {sorted(state)}, expected {sorted(expected)}")
        for name, tensor in state.items():
            setattr(self, name, tensor)

    def limit_tensor_elements(self, max_batch: int, limit: int) -> None:
        """Keep every tensor the traced graph materialises at ``max_batch`` within ``limit`` elements (TensorRT's
        bound); nothing to do for scorers whose tensors do not grow with what they learnt."""


class EmbeddingScorer(Scorer):
    """Fitted on the backbone embeddings of the training images; calibrated by k-fold (:meth:`fold_scores`)."""

    progress: Callable[[int, int], None] | None = None  # (done, total) units of fitting work, for a bar

    @abstractmethod
    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Backbone features to per-position vectors [N, C, ``grid``]."""

    @abstractmethod
    def fit(self, embeddings: torch.Tensor) -> None:
        """Learn normal from the embeddings of the training images."""

    @abstractmethod
    def score(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch score map, image score) of embeddings."""

    def forward(self, features: list[torch.Tensor], pixels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(self.embed(features))

    @torch.no_grad()
    def embed_images(self, extractor: nn.Module, images: np.ndarray, batch_size: int,
                     advance: Callable[[int], None] | None = None) -> torch.Tensor:
        """The per-position embeddings of uint8 NHWC images."""
        embeddings = []
        for start in range(0, len(images), batch_size):
            embeddings.append(self.embed(extractor(pixel_batch(images[start:start + batch_size]))))
            if advance is not None:
                advance(len(embeddings[-1]))
        return torch.cat(embeddings)

    def fit_images(self, images: np.ndarray, extractor: nn.Module, progress) -> None:
        self.fit(self.embed_images(extractor, images, self.params.batch_size))

    def fit_training(self, extractor: nn.Module, images: np.ndarray, folds: np.ndarray, calibrated: np.ndarray,
                     progress) -> tuple[np.ndarray, float]:
        """Embed every image once, fit on all of them, calibrate on the k-fold scores."""
        task = progress.add_task("extracting features", total=len(images))
        embeddings = self.embed_images(extractor, images, self.params.batch_size,
                                       lambda n: progress.advance(task, n))
        task = progress.add_task(f"fitting {type(self).__name__.removesuffix('Scorer')}", total=None)
        self.progress = lambda done, total: progress.update(task, completed=done, total=total)
        self.fit(embeddings)
        self.progress = None
        fitted = time.perf_counter()
        progress.add_task(f"calibrating ({self.params.calibration_folds}-fold)", total=None)
        return self.fold_scores(embeddings, folds, self.params.batch_size)[calibrated], fitted

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


class MemoryBankScorer(EmbeddingScorer):
    """An embedding scorer whose normal model is a bank of examples: new normal images can be appended to it
    without refitting (``edge-anomaly update``; anomalib's ``MemoryBankMixin`` in spirit)."""

    @property
    @abstractmethod
    def bank_entries(self) -> int:
        """Entries in the bank."""

    @abstractmethod
    def add_normals(self, embeddings: torch.Tensor, folds: np.ndarray, batch_size: int) -> np.ndarray:
        """Append what the new images' ``embeddings`` add to the bank; return each one's score against the
        updated bank without the entries of its own fold (``folds``), for recalibration."""


class ImageTrainedScorer(Scorer):
    """Trained by gradient descent on the images themselves (k refits would cost k trainings): calibrated on
    the last ``holdout_fraction`` of the folds, held out of training."""

    def fit_training(self, extractor: nn.Module, images: np.ndarray, folds: np.ndarray, calibrated: np.ndarray,
                     progress) -> tuple[np.ndarray, float]:
        n_folds = int(folds.max()) + 1  # fewer than calibration_folds when there are fewer images
        held = folds >= n_folds - max(1, round(n_folds * self.params.holdout_fraction))
        self.fit_images(images[~held], extractor, progress)
        fitted = time.perf_counter()
        progress.add_task("calibrating (held-out images)", total=None)
        return self.image_scores(extractor, images[held & calibrated]), fitted

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Trained networks have fixed shapes, so the ordinary strict load applies."""
        self.load_state_dict(state)

    @torch.no_grad()
    def image_scores(self, extractor: nn.Module, images: np.ndarray) -> np.ndarray:
        """Raw image scores (float64) of uint8 NHWC images, as the graph computes them."""
        scores = []
        for start in range(0, len(images), self.params.batch_size):
            pixels = pixel_batch(images[start:start + self.params.batch_size])
            scores.append(self(extractor(pixels), pixels)[1].numpy())
        return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0, np.float64)


@dataclass(frozen=True)
class Template:
    """A template as the registry lists it: its name, a line saying when to choose it, and its scorer."""

    name: str
    summary: str
    scorer: type[Scorer]

    @property
    def params(self) -> type[TemplateParams]:
        return self.scorer.params_type


def pixel_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images as the graph's float NCHW pixels in 0..1."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def batched_image_scores(scorer: EmbeddingScorer, embeddings: torch.Tensor, batch_size: int) -> np.ndarray:
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
