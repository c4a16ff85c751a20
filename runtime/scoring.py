"""From raw engine outputs to a verdict: normalisation, threshold, concept and anomaly kind.

The threshold and the normalisation travel with every model and bundle as plain numbers, so
the PyTorch predictor and every exported engine reach the same decision the same way.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
from pydantic import Field, model_validator

from runtime.global_stats import CAPTURE_STATS, STAT_NAMES, GlobalStats, image_statistics
from runtime.preprocess import heatmap_to_frame
from runtime.result import ANOMALOUS, NORMAL, Result
from runtime.roi import Region
from runtime.schema import Section

_MAX_EXPONENT = 60.0  # exp(60) is finite in float64; beyond it the logistic is 0 or 1 anyway

# What counts as a compact hot region (see compact_hot_region), as shares of the inspected area.
HOT_LEVEL = 0.5  # normalised heatmap level: the calibrated threshold
MAX_HOT_SHARE = 0.4  # hotter than this share of the area, the anomaly is the whole frame
FEW_COMPONENTS = 3  # the largest FEW_COMPONENTS hot components ...
MIN_FEW_SHARE = 0.8  # ... must hold this share of the hot area (not speckle all over)
REGION_MARGIN = 1 / 32  # the region is widened by this share of the shorter side before it is left out


def _logistic(excess: float | np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(excess, -_MAX_EXPONENT, _MAX_EXPONENT)))


def _excess(raw: float, scale: ScoreScale) -> float:
    """How far ``raw`` is past ``scale``'s threshold, in units of its spread (>= 0: the check fired)."""
    return float((raw - scale.threshold) * np.log(9.0) / scale.spread)


def compact_hot_region(heatmap: np.ndarray) -> np.ndarray | None:
    """The pixels of a compact hot region of a normalised heatmap, widened by a margin, or None.

    Hot pixels are those >= HOT_LEVEL; regions are their 8-connected components
    (``cv2.connectedComponentsWithStats``). The hot area is compact when it is non-empty,
    covers at most MAX_HOT_SHARE of the map, and its FEW_COMPONENTS largest components hold
    at least MIN_FEW_SHARE of it: one or a few blobs, not a whole frame gone hot and not a
    dust of spots. All shares are of the map's area, so they hold for any input size.
    """
    hot = (np.asarray(heatmap) >= HOT_LEVEL).astype(np.uint8)
    area = int(hot.sum())
    if area == 0 or area > MAX_HOT_SHARE * hot.size:
        return None
    _, _, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    sizes = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
    if sizes[:FEW_COMPONENTS].sum() < MIN_FEW_SHARE * area:
        return None
    margin = max(1, round(REGION_MARGIN * min(hot.shape)))
    return cv2.dilate(hot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))) > 0


class ScoreScale(Section):
    """A logistic map of raw scores onto 0..1 that puts ``threshold`` at exactly 0.5.

    ``spread`` is the raw distance over which the normalised score moves from 0.5 to 0.9;
    the map is monotonic, so rankings (and AUROC) are those of the raw scores. The one type of
    a threshold from fit to verdict: the model card and the manifest hold it as it is.
    """

    threshold: float = Field(allow_inf_nan=False)
    spread: float = Field(gt=0, allow_inf_nan=False)

    def normalize(self, raw: np.ndarray | float) -> np.ndarray:
        return _logistic((np.asarray(raw, dtype=np.float64) - self.threshold) * np.log(9.0) / self.spread)

    def normalize_map(self, raw: np.ndarray) -> np.ndarray:
        """:meth:`normalize` for a heatmap, in float32 and in place on one copy (0.08 ms instead of
        0.3 ms for a 256 px map; the same values to 1e-7)."""
        scaled = np.asarray(raw, dtype=np.float32) - np.float32(self.threshold)
        scaled *= np.float32(-np.log(9.0) / self.spread)
        np.clip(scaled, -_MAX_EXPONENT, _MAX_EXPONENT, out=scaled)
        np.exp(scaled, out=scaled)
        scaled += 1.0
        return np.reciprocal(scaled, out=scaled)


class Scoring(Section):
    """Everything needed to turn (heatmap, score) from an engine into a :class:`Result`: the model card's and
    the manifest's ``scoring`` section.

    ``lighting``, ``blur`` and ``global_stats`` come together or not at all (absent when the model
    was trained without global checks), and so do ``noise``, ``compression`` and ``capture_stats``
    (absent in models made before them).
    """

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset(
        {"lighting", "blur", "global_stats", "noise", "compression", "capture_stats"})

    local: ScoreScale
    lighting: ScoreScale | None = None
    blur: ScoreScale | None = None
    global_stats: GlobalStats | None = None
    noise: ScoreScale | None = None
    compression: ScoreScale | None = None
    capture_stats: GlobalStats | None = None

    @model_validator(mode="after")
    def _checks_complete(self) -> Scoring:
        """Each group of checks whole and with this version's statistics: half a group must not silently
        switch a check off."""
        for stats, scales, names in (("global_stats", ("lighting", "blur"), STAT_NAMES),
                                     ("capture_stats", ("noise", "compression"), CAPTURE_STATS)):
            given = [name for name in (*scales, stats) if getattr(self, name) is not None]
            if given and len(given) != 3:
                raise ValueError(f"{', '.join((*scales, stats))} come together, got only {', '.join(given)}")
            if getattr(self, stats) is not None:
                getattr(self, stats).require_names(names)
        return self

    @property
    def checks_global(self) -> bool:
        """Whether :meth:`decide` runs the lighting and blur checks on the model input's statistics."""
        return self.global_stats is not None

    @property
    def checks_capture(self) -> bool:
        """Whether :meth:`decide` wants the frame's :func:`runtime.global_stats.capture_statistics`."""
        return self.capture_stats is not None

    def decide(self, raw_score: float, raw_heatmap: np.ndarray, input_rgb: np.ndarray,
               frame_hw: tuple[int, int], latency_ms: float = 0.0, region: Region | None = None,
               capture: np.ndarray | None = None) -> Result:
        """Verdict for one image from the engine's raw outputs and the model-input image.

        ``region`` is the part of the frame the model saw (ROI, centre crop); the heatmap is
        placed there in a frame-size map. ``capture`` is the frame's capture statistics
        (noise, blockiness), measured at the frame's resolution; without it the noise and
        compression checks are skipped.
        """
        heatmap = self.local.normalize_map(raw_heatmap)
        kind_scores = {"local": float(self.local.normalize(raw_score))}
        excess: dict[str, float] = {}
        stats = None
        if self.checks_global:
            stats = image_statistics(input_rgb)
            excess = self._global_excess(stats)
        if capture is not None and self.checks_capture:
            excess.update(self.capture_excess(capture))
        kind_scores.update({name: float(_logistic(value)) for name, value in excess.items()})
        fired = [name for name, value in excess.items() if value >= 0.0]
        # The global checks only speak when they fire: below their thresholds the verdict is
        # the local score alone, so they cannot reorder images they have nothing to say about.
        normalized = max(kind_scores[name] for name in ["local", *fired])
        anomalous = normalized >= 0.5
        kind = self._kind(excess, heatmap, input_rgb) if anomalous else None
        return Result(
            score=float(raw_score),
            normalized_score=normalized,
            label=ANOMALOUS if anomalous else NORMAL,
            confidence=normalized if anomalous else 1.0 - normalized,
            kind=kind,
            heatmap=heatmap_to_frame(heatmap, frame_hw, region),
            kind_scores=kind_scores,
            latency_ms=latency_ms,
            global_stats=stats,
            capture_stats=capture,
        )

    def _global_excess(self, stats: np.ndarray) -> dict[str, float]:
        """How far past its threshold each global check is, in units of its spread (>= 0: fired),
        for an image's statistics (:func:`image_statistics`).

        Unlike the normalised score this does not saturate at 1, so two checks that both fired
        clearly can still be told apart.
        """
        lighting, blur = self.global_stats.deviation_scores(stats)
        return {name: _excess(raw[0], scale) for name, raw, scale in (("lighting", lighting, self.lighting),
                                                                      ("blur", blur, self.blur))}

    def capture_excess(self, capture: np.ndarray) -> dict[str, float]:
        """Like :meth:`_global_excess`, for the noise and compression checks on the frame's capture statistics."""
        raw = self.capture_stats.capture_deviation(capture)
        return {"noise": _excess(raw["noise"][0], self.noise),
                "compression": _excess(raw["compression"][0], self.compression)}

    def _kind(self, excess: dict[str, float], heatmap: np.ndarray, input_rgb: np.ndarray) -> str:
        """A camera kind (``lighting``, ``blur``, ``noise``, ``compression``) only when no local region explains
        the frame, else ``local``.

        When the lighting or blur check fired and the heatmap has a compact hot region
        (:func:`compact_hot_region`), the global statistics are measured again without that
        region: if they are back within their thresholds, the region is what moved them (a
        missing label, a rust patch) and the kind is ``local``; if the rest of the frame is
        still off (a dark frame with one hot spot), the global check that fired furthest wins.
        The capture checks measure the whole frame's noise and blocks, which no region can
        explain: when they fire, the camera is out of its tolerance.
        """
        fired = [name for name, value in excess.items() if value >= 0.0]
        if not fired:
            return "local"
        hot = compact_hot_region(heatmap) if set(fired) <= {"lighting", "blur"} else None
        if hot is not None:
            if hot.shape != input_rgb.shape[:2]:
                hot = cv2.resize(hot.astype(np.uint8), input_rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            without = self._global_excess(image_statistics(input_rgb, exclude=hot))
            if all(without[name] < 0.0 for name in fired):
                return "local"
        return max(fired, key=excess.__getitem__)
