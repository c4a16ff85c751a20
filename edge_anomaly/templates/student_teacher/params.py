"""The student-teacher's hyperparameters."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from edge_anomaly.templates.base import TemplateParams


class StudentTeacherParams(TemplateParams):
    layers: list[str] = Field(["stage3"], description="teacher stages, each weighing the same in the maps; the "
                              "first must sit at stride 8 (stage3: its detail tells part types and orientations apart)")
    iterations: int = Field(2000, ge=1, description="training steps (each one batch_size images)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate (cosine decay to 5% over the run)")
    student_width: int = Field(64, ge=8, le=512, description="channels of the student's layers")
    student_depth: int = Field(4, ge=1, le=12, description="3x3 convolutions after the student's stem: its receptive "
                               "field is 12 + 16 * depth px; more context tells it which part belongs where")
    global_smoothing: int = Field(3, ge=1, le=9, description="cells (odd) the global map is averaged over before "
                                  "it joins the local one: the autoencoder resolves no finer, its spikes are noise")
    global_weight: float = Field(0.5, ge=0.0, le=4.0, description="weight of the normalised global map against "
                                 "the local one (EfficientAD: 1); at 1 it helped surface defects on bottle and hid "
                                 "wrong-type parts on the boards")
    latent_dim: int = Field(64, ge=4, le=1024, description="autoencoder bottleneck: one vector per image")
    hard_quantile: float = Field(0.99, ge=0.0, lt=1.0,
                                 description="hard-feature loss: only elements above this quantile count")
    penalty_weight: float = Field(1.0, ge=0.0, description="weight of the student-output penalty on penalty images")
    validation_fraction: float = Field(0.1, gt=0.0, le=0.5,
                                       description="share of fitting images held out to stop early and normalise maps")
    shifted_copies: int = Field(3, ge=0, le=8, description="copies of each training image shifted by a few "
                                "pixels (less than one feature cell): the teacher's stride-8 features change with "
                                "sub-cell position, and the student learns that instead of erring on it")
    eval_every: int = Field(50, ge=1, description="iterations between validation losses")
    patience: int = Field(8, ge=1, description="stop after this many validations without improvement")

    # what models saved before each of these hyperparameters existed were built with
    added_params: ClassVar[dict[str, Any]] = {"student_depth": 2, "global_smoothing": 1, "shifted_copies": 0,
                                              "global_weight": 1.0}

    @model_validator(mode="after")
    def _sizes_fit(self) -> StudentTeacherParams:
        if self.global_smoothing % 2 == 0:
            raise ValueError(f"global_smoothing={self.global_smoothing} must be odd (the map keeps its size)")
        if self.eval_every > self.iterations:
            raise ValueError(f"eval_every={self.eval_every} exceeds iterations={self.iterations}")
        return self
