"""PatchCore: a coreset memory bank of patch features, nearest-neighbour distance (README.md here)."""

from edge_anomaly.templates.base import Template
from edge_anomaly.templates.patchcore.params import PatchCoreParams
from edge_anomaly.templates.patchcore.scorer import PatchCoreScorer

TEMPLATE = Template("patchcore", "coreset memory bank of patch features, nearest-neighbour distance", PatchCoreScorer)

__all__ = ["TEMPLATE", "PatchCoreParams", "PatchCoreScorer"]
