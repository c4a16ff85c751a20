"""Choosing the decision threshold and the score normalisation from held-out images."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from runtime.scoring import ScoreScale


def _spread(threshold: float, normal_scores: np.ndarray) -> float:
    """Distance from the typical normal score to the threshold (maps the median to 0.1)."""
    spread = threshold - float(np.median(normal_scores))
    fallback = max(float(np.std(normal_scores)), abs(threshold) * 1e-3, 1e-6)
    return spread if spread > fallback * 1e-3 else fallback


def quantile_scale(normal_scores: np.ndarray, quantile: float, margin: float) -> ScoreScale:
    """Threshold = q-quantile of normal scores plus ``margin`` times its distance to the median.

    The margin scales with the normal spread, so it means the same for any score unit.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no held-out normal scores to calibrate on")
    upper = float(np.quantile(scores, quantile))
    threshold = upper + margin * max(upper - float(np.median(scores)), 0.0)
    return ScoreScale(threshold=threshold, spread=_spread(threshold, scores))


def f1_scale(normal_scores: np.ndarray, defect_scores: np.ndarray) -> ScoreScale:
    """Threshold that maximises F1 separating the given normal and defect examples.

    It is placed halfway between the last normal score below it and the chosen cut, so a
    perfectly separated set does not sit exactly on a training example.
    """
    normal = np.asarray(normal_scores, dtype=np.float64)
    defects = np.asarray(defect_scores, dtype=np.float64)
    if normal.size == 0 or defects.size == 0:
        raise ValueError("F1 calibration needs both normal and defect scores")
    labels = np.r_[np.zeros(normal.size), np.ones(defects.size)]
    scores = np.r_[normal, defects]
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    cut = float(thresholds[int(np.argmax(f1[:-1]))])
    below = scores[scores < cut]
    threshold = (cut + float(below.max())) / 2 if below.size else cut
    return ScoreScale(threshold=threshold, spread=_spread(threshold, normal))
