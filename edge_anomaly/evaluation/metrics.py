"""Image- and pixel-level anomaly detection metrics, as reported on MVTec AD.

Every metric returns nan instead of raising when it is undefined (one class only, no defect
pixels), because a dataset may legitimately have no masks or no anomalous images.
AUPRO is written by hand; the rest is scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

# Thresholds per side (normal-score and region-score quantiles) of the AUPRO sweep. The
# trapezoid between neighbouring thresholds is off by at most 1 / (2 * _SWEEP) of the result.
_SWEEP = 2000


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the image-level ROC curve; labels are 1 for anomalous."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores)))


def pixel_auroc(masks: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray]) -> float:
    """ROC AUC over the pixels of all images taken together (nonzero mask = defect)."""
    pairs = list(_pairs(masks, heatmaps))
    if not pairs:
        return float("nan")
    truth = np.concatenate([mask.ravel() for mask, _ in pairs])
    scores = np.concatenate([heatmap.ravel() for _, heatmap in pairs])
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def aupro(masks: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD).

    Unlike pixel AUROC, every defect region (8-connected component of a mask) counts
    equally, so a map that only finds the large defects is not rewarded for their size.
    A perfect map scores 1.0, random scores about ``fpr_limit / 2``.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    normal, defect, weight = [], [], []
    n_regions = 0
    for mask, heatmap in _pairs(masks, heatmaps):
        n_labels, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        region_of_pixel = regions[mask]
        sizes = np.bincount(region_of_pixel, minlength=n_labels)
        normal.append(heatmap[~mask])
        defect.append(heatmap[mask])
        weight.append(1.0 / sizes[region_of_pixel])
        n_regions += n_labels - 1
    if n_regions == 0 or sum(part.size for part in normal) == 0:
        return float("nan")

    normal_sorted = np.sort(np.concatenate(normal))
    defect_all = np.concatenate(defect)
    order = np.argsort(defect_all, kind="stable")
    defect_sorted = defect_all[order]
    # A pixel's weight is its share of the mean region overlap, so PRO(t) is a weighted count.
    cum_weight = np.concatenate(([0.0], np.cumsum(np.concatenate(weight)[order] / n_regions)))

    thresholds = _sweep(normal_sorted, defect_sorted, cum_weight, fpr_limit)
    n_normal = normal_sorted.size
    fpr = (n_normal - np.searchsorted(normal_sorted, thresholds, side="left")) / n_normal
    pro = cum_weight[-1] - cum_weight[np.searchsorted(defect_sorted, thresholds, side="left")]

    # fpr[0] == 0 (threshold +inf), so the curve is cut after its last point within the limit
    # and closed with a point interpolated at exactly fpr_limit.
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:end], pro[:end]
    if end < fpr.size:
        frac = (fpr_limit - fpr[end - 1]) / (fpr[end] - fpr[end - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[end - 1] + frac * (pro[end] - pro[end - 1]))
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return area / fpr_limit


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(F1, threshold) at the F1-optimal threshold: what the detector could reach if perfectly tuned."""
    labels = np.asarray(labels)
    if not labels.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores))
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 with images predicted anomalous when ``score >= threshold`` (e.g. the calibrated one)."""
    labels = np.asarray(labels)
    if not labels.any():
        return float("nan")
    return float(f1_score(labels, np.asarray(scores) >= threshold))


def _pairs(
    masks: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (bool mask, heatmap) pairs, naming the first image whose shapes disagree.

    Heatmaps keep their dtype: float32 maps halve the memory and sort time of 100s of images."""
    if len(masks) != len(heatmaps):
        raise ValueError(f"{len(masks)} masks but {len(heatmaps)} heatmaps")
    for index, (mask, heatmap) in enumerate(zip(masks, heatmaps, strict=True)):
        mask, heatmap = np.asarray(mask), np.asarray(heatmap)
        if mask.shape != heatmap.shape:
            raise ValueError(f"image {index}: mask shape {mask.shape} != heatmap shape {heatmap.shape}")
        yield mask != 0, heatmap


def _sweep(
    normal_sorted: np.ndarray, defect_sorted: np.ndarray, cum_weight: np.ndarray, fpr_limit: float
) -> np.ndarray:
    """Descending thresholds: +inf, normal-score quantiles over FPR 0..fpr_limit (plus the first
    point beyond it), region-overlap quantiles of the defect scores, -inf."""
    n_normal = normal_sorted.size
    lowest = max(0, int(np.floor(n_normal * (1.0 - fpr_limit))) - 2)
    normal_idx = np.linspace(lowest, n_normal - 1, _SWEEP).round().astype(np.int64)
    levels = np.linspace(0.0, cum_weight[-1], _SWEEP)
    defect_idx = np.clip(np.searchsorted(cum_weight, levels, side="left") - 1, 0, defect_sorted.size - 1)
    thresholds = np.unique(np.concatenate((normal_sorted[normal_idx], defect_sorted[defect_idx])))
    return np.concatenate(([np.inf], thresholds[::-1], [-np.inf]))
