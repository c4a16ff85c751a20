"""PaDiM: a Gaussian per feature-map position, Mahalanobis distance (README.md here)."""

from edge_anomaly.templates.base import Template
from edge_anomaly.templates.padim.params import PadimParams
from edge_anomaly.templates.padim.scorer import PadimScorer

TEMPLATE = Template("padim", "Gaussian per feature-map position, Mahalanobis distance; only for aligned parts "
                    "(fixtured, same place every time): parts that move or vary in place break it", PadimScorer)

__all__ = ["TEMPLATE", "PadimParams", "PadimScorer"]
