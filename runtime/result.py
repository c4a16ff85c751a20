"""What every inspection returns, whichever engine produced it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NORMAL = "normal"
ANOMALOUS = "anomalous"
CONCEPTS = (NORMAL, ANOMALOUS)
KINDS = ("local", "lighting", "blur")


@dataclass
class Result:
    """One image's verdict.

    ``score`` is the template's raw image score (its own units); ``normalized_score`` maps the
    decision onto 0..1 with the calibrated threshold at 0.5 and already includes the lighting
    and blur checks. ``heatmap`` is normalised the same way, at the original frame's size.
    """

    score: float
    normalized_score: float
    label: str
    confidence: float
    kind: str | None
    heatmap: np.ndarray
    kind_scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    # the whole-image statistics (runtime.global_stats.STAT_NAMES) the lighting and blur checks measured,
    # kept for the station's drift monitor; None for models without those checks
    global_stats: np.ndarray | None = None
    # the frame's capture statistics (runtime.global_stats.CAPTURE_STATS: noise, blockiness), for the source
    # check (runtime.capture_check); None for models without the noise and compression checks
    capture_stats: np.ndarray | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.label == ANOMALOUS

    @property
    def concept(self) -> dict:
        return {"label": self.label, "confidence": self.confidence}

    def to_dict(self) -> dict:
        """JSON-ready summary (the heatmap itself is left out: it is saved as an image)."""
        return {
            "score": self.score,
            "normalized_score": self.normalized_score,
            "label": self.label,
            "confidence": self.confidence,
            "kind": self.kind,
            "kind_scores": self.kind_scores,
            "latency_ms": round(self.latency_ms, 3),
        }
