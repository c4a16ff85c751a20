"""PatchCore's hyperparameters."""

from __future__ import annotations

from pydantic import Field

from edge_anomaly.templates.base import TemplateParams


class PatchCoreParams(TemplateParams):
    layers: list[str] = Field(["stage3", "stage5"], description="backbone stages (PatchCore: two mid-level ones)")
    patch_size: int = Field(3, ge=1, description="neighbourhood averaged into each patch feature (odd)")
    coreset_ratio: float = Field(0.02, gt=0.0, le=1.0, description="fraction of training patches kept in the bank")
    projection_dim: int = Field(128, ge=8, description="random-projection size used by the coreset selection")
    num_neighbors: int = Field(9, ge=1, description="bank neighbours used by the image-score reweighting")
    top_k: int = Field(1, ge=1, description="image score: mean of the k largest patch scores (1: the maximum)")
