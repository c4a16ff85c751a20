"""PaDiM's hyperparameters."""

from __future__ import annotations

from pydantic import Field

from edge_anomaly.templates.base import TemplateParams


class PadimParams(TemplateParams):
    layers: list[str] = Field(["stage3", "stage4", "stage5"], description="backbone stages; the first sets the grid")
    n_features: int = Field(64, ge=2, description="random subset of channels modelled per position")
    covariance_eps: float = Field(0.01, gt=0.0, description="added to the covariance diagonal for stability")
