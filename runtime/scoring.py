"""From raw engine outputs to a verdict: normalisation, threshold, concept and anomaly kind.

The threshold and the normalisation travel with every model and bundle as plain numbers, so
the PyTorch predictor and every exported engine reach the same decision the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.global_stats import GlobalStatsReference, image_statistics
from runtime.preprocess import Region, heatmap_to_frame
from runtime.result import ANOMALOUS, NORMAL, Result

_MAX_EXPONENT = 60.0  # exp(60) is finite in float64; beyond it the logistic is 0 or 1 anyway


@dataclass(frozen=True)
class ScoreScale:
    """A logistic map of raw scores onto 0..1 that puts ``threshold`` at exactly 0.5.

    ``spread`` is the raw distance over which the normalised score moves from 0.5 to 0.9;
    the map is monotonic, so rankings (and AUROC) are those of the raw scores.
    """

    threshold: float
    spread: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold) or not np.isfinite(self.spread) or self.spread <= 0:
            raise ValueError(f"invalid score scale: threshold={self.threshold}, spread={self.spread}")

    def normalize(self, raw: np.ndarray | float) -> np.ndarray:
        exponent = np.clip(-(np.asarray(raw, dtype=np.float64) - self.threshold) * np.log(9.0) / self.spread,
                           -_MAX_EXPONENT, _MAX_EXPONENT)
        return 1.0 / (1.0 + np.exp(exponent))

    def to_dict(self) -> dict:
        return {"threshold": float(self.threshold), "spread": float(self.spread)}

    @classmethod
    def from_dict(cls, data: dict) -> ScoreScale:
        return cls(threshold=float(data["threshold"]), spread=float(data["spread"]))


@dataclass(frozen=True)
class Scoring:
    """Everything needed to turn (heatmap, score) from an engine into a :class:`Result`.

    ``lighting`` and ``blur`` are absent when the model was trained without global checks.
    """

    local: ScoreScale
    reference: GlobalStatsReference | None = None
    lighting: ScoreScale | None = None
    blur: ScoreScale | None = None

    def decide(self, raw_score: float, raw_heatmap: np.ndarray, input_rgb: np.ndarray,
               frame_hw: tuple[int, int], latency_ms: float = 0.0, region: Region | None = None) -> Result:
        """Verdict for one image from the engine's raw outputs and the model-input image.

        ``region`` is the part of the frame the model saw (ROI, centre crop); the heatmap is
        placed there in a frame-size map.
        """
        kind_scores = {"local": float(self.local.normalize(raw_score))}
        if self.reference is not None and self.lighting is not None and self.blur is not None:
            lighting, blur = self.reference.deviation_scores(image_statistics(input_rgb))
            kind_scores["lighting"] = float(self.lighting.normalize(lighting[0]))
            kind_scores["blur"] = float(self.blur.normalize(blur[0]))
        # The global checks only speak when they fire: below their thresholds the verdict is
        # the local score alone, so they cannot reorder images they have nothing to say about.
        # When one fires it names the kind, since a dark or blurred frame also disturbs every
        # patch and "lighting"/"blur" is the actionable explanation.
        fired = [name for name, value in kind_scores.items() if name != "local" and value >= 0.5]
        kind = max(fired, key=kind_scores.__getitem__) if fired else "local"
        normalized = max(kind_scores[name] for name in ["local", *fired])
        anomalous = normalized >= 0.5
        heatmap = self.local.normalize(raw_heatmap).astype(np.float32)
        return Result(
            score=float(raw_score),
            normalized_score=normalized,
            label=ANOMALOUS if anomalous else NORMAL,
            confidence=normalized if anomalous else 1.0 - normalized,
            kind=kind if anomalous else None,
            heatmap=heatmap_to_frame(heatmap, frame_hw, region),
            kind_scores=kind_scores,
            latency_ms=latency_ms,
        )

    def to_dict(self) -> dict:
        data: dict = {"local": self.local.to_dict()}
        if self.reference is not None and self.lighting is not None and self.blur is not None:
            data.update(lighting=self.lighting.to_dict(), blur=self.blur.to_dict(),
                        global_stats=self.reference.to_dict())
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Scoring:
        if "global_stats" not in data:
            return cls(local=ScoreScale.from_dict(data["local"]))
        return cls(
            local=ScoreScale.from_dict(data["local"]),
            reference=GlobalStatsReference.from_dict(data["global_stats"]),
            lighting=ScoreScale.from_dict(data["lighting"]),
            blur=ScoreScale.from_dict(data["blur"]),
        )
