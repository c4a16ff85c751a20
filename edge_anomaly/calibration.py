"""Choosing the decision threshold and the score normalisation from normal scores.

The default threshold holds a target false-alarm rate: the normal scores come from a k-fold
over the training set (each image scored by a model that did not see it), and a generalised
Pareto distribution fitted to their upper tail (the peaks-over-threshold method of extreme
value theory) places the threshold where the chosen share of good parts would exceed it. The
tail fit reaches rates below 1/n that the empirical quantile alone cannot resolve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta, genpareto
from sklearn.metrics import precision_recall_curve

from runtime.scoring import ScoreScale

MIN_TAIL_POINTS = 10  # exceedances needed for a tail fit
MIN_SCORES_FOR_TAIL = 20
TAIL_SHARE = 0.1  # the upper 10 % of the normal scores is the tail that gets fitted
SHAPE_LIMIT = 0.5  # a heavier or shorter tail than this is not credible from a few dozen points


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
        raise ValueError("no normal scores to calibrate on")
    upper = float(np.quantile(scores, quantile))
    threshold = upper + margin * max(upper - float(np.median(scores)), 0.0)
    return ScoreScale(threshold=threshold, spread=_spread(threshold, scores))


@dataclass(frozen=True)
class Calibration:
    """How the threshold was set, recorded in the model so the promise can be checked later."""

    method: str  # "tail-fit", "empirical" (too few scores for a tail) or "f1"
    target_false_alarm_rate: float | None
    estimated_false_alarm_rate: float | None  # at the chosen threshold, from the fitted tail
    n_scores: int
    reliable: bool  # enough normal scores to measure, not only extrapolate, the target rate
    threshold: float
    tail: dict | None = None  # {"start", "shape", "scale", "share"} of the fitted tail
    note: str = ""
    # 95 % upper confidence bound on the false-alarm rate from the held-out scores alone (Clopper-Pearson on the
    # share at or above the threshold): what n good images can vouch for, whatever the tail fit says
    false_alarm_rate_upper: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


CONFIDENCE = 0.95


def false_alarm_upper_bound(normal_scores: np.ndarray, threshold: float) -> float:
    """The CONFIDENCE upper bound on the share of good parts at or above ``threshold`` (Clopper-Pearson).

    With none of n scores above it, that is about 3 / n: 209 good images vouch for 1.4 % at most.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    exceeding = int(np.sum(scores >= threshold))
    if exceeding >= scores.size:
        return 1.0
    return float(beta.ppf(CONFIDENCE, exceeding + 1, scores.size - exceeding))


def false_alarm_threshold(normal_scores: np.ndarray, rate: float) -> tuple[ScoreScale, Calibration]:
    """Threshold that a share ``rate`` of normal scores is expected to exceed.

    Above the 90th percentile the scores are modelled as a generalised Pareto tail; the
    threshold never sits below the empirical (1 - rate) quantile nor, where the rate is below
    1/n, below the largest normal score seen.
    """
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))
    n = scores.size
    if n == 0:
        raise ValueError("no normal scores to calibrate on")
    reliable = n >= math.ceil(1.0 / rate)
    empirical = float(np.quantile(scores, 1.0 - rate)) if rate * n >= 1 else float(scores[-1])
    if n < MIN_SCORES_FOR_TAIL:
        threshold = scores[-1] + (scores[-1] - float(np.median(scores)))
        note = (f"only {n} normal scores: no tail fit possible; the threshold is the largest normal score plus its "
                f"distance to the median, and no false-alarm rate can be promised (use {math.ceil(1 / rate)} or "
                "more good images)")
        calibration = Calibration("empirical", rate, None, n, False, float(threshold), None, note,
                                  false_alarm_upper_bound(scores, threshold))
        return ScoreScale(threshold=float(threshold), spread=_spread(threshold, scores)), calibration
    n_tail = max(MIN_TAIL_POINTS, math.ceil(TAIL_SHARE * n))
    start = float(scores[n - n_tail - 1])
    excess = scores[n - n_tail:] - start
    share = n_tail / n
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    if not abs(shape) <= SHAPE_LIMIT:
        shape = float(np.clip(np.nan_to_num(shape), -SHAPE_LIMIT, SHAPE_LIMIT))
        _, _, scale = genpareto.fit(excess, f0=shape, floc=0.0)
    scale = max(float(scale), 1e-12)
    if rate < share:
        threshold = start + float(genpareto.ppf(1.0 - rate / share, shape, loc=0.0, scale=scale))
    else:
        threshold = empirical
    threshold = max(threshold, empirical)
    estimated = share * float(genpareto.sf(threshold - start, shape, loc=0.0, scale=scale))
    note = "" if reliable else (
        f"{n} normal scores cannot measure a false-alarm rate of {rate:.3g}: the threshold is extrapolated from "
        f"the fitted tail; {math.ceil(1 / rate)} or more good images make it a measured promise")
    tail = {"start": start, "shape": float(shape), "scale": scale, "share": share}
    calibration = Calibration("tail-fit", rate, estimated, n, reliable, float(threshold), tail, note,
                              false_alarm_upper_bound(scores, threshold))
    return ScoreScale(threshold=float(threshold), spread=_spread(threshold, scores)), calibration


def f1_scale(normal_scores: np.ndarray, defect_scores: np.ndarray) -> tuple[ScoreScale, Calibration]:
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
    observed = float(np.mean(normal >= threshold))
    calibration = Calibration("f1", None, observed, int(normal.size), False, threshold, None,
                              "threshold chosen on the given defect examples (F1-optimal)")
    return ScoreScale(threshold=threshold, spread=_spread(threshold, normal)), calibration
