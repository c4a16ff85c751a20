"""Metrics against hand-computed values and an independent slow AUPRO reference."""

from __future__ import annotations

import math
from itertools import pairwise

import cv2
import numpy as np
import pytest

from edge_anomaly.evaluation.metrics import aupro, best_f1, f1_at, image_auroc, pixel_auroc


def _reference_aupro(masks, heatmaps, fpr_limit=0.3):
    """Plain loop over every distinct score: exact FPR and mean region overlap at each threshold."""
    regions, normal = [], []
    for mask, heatmap in zip(masks, heatmaps, strict=True):
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [heatmap[labels == i] for i in range(1, n)]
        normal.append(heatmap[mask == 0])
    normal = np.concatenate(normal)
    points = [(0.0, 0.0)]
    for t in sorted(set(np.concatenate([h.ravel() for h in heatmaps]).tolist()), reverse=True):
        fpr = float(np.mean(normal >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(points):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def _two_regions(size=64):
    mask = np.zeros((size, size), dtype=bool)
    mask[8:20, 8:20] = True
    mask[40:52, 30:42] = True
    return mask


def test_perfect_map_scores_one():
    rng = np.random.default_rng(0)
    masks = [_two_regions(), np.zeros((64, 64), dtype=bool)]
    heatmaps = [np.where(m, 0.9 + 0.1 * rng.random(m.shape), 0.5 * rng.random(m.shape)) for m in masks]
    assert pixel_auroc(masks, heatmaps) == pytest.approx(1.0)
    assert aupro(masks, heatmaps) == pytest.approx(1.0)


def test_inverted_map_scores_zero():
    mask = _two_regions()
    heatmap = np.where(mask, 0.1, 0.9)
    assert pixel_auroc([mask], [heatmap]) == pytest.approx(0.0)
    assert aupro([mask], [heatmap]) == pytest.approx(0.0, abs=1e-9)


def test_random_map_gives_half_the_fpr_limit():
    # Uniform random scores: PRO(FPR) = FPR, so the normalised area up to 0.3 is 0.15.
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(20):
        mask = np.zeros((128, 128), dtype=np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, 100, size=2)
            mask[y : y + 20, x : x + 20] = 1
        masks.append(mask)
    heatmaps = [rng.random(m.shape) for m in masks]
    assert aupro(masks, heatmaps) == pytest.approx(0.15, abs=0.01)
    assert aupro(masks, heatmaps, fpr_limit=1.0) == pytest.approx(0.5, abs=0.02)
    assert pixel_auroc(masks, heatmaps) == pytest.approx(0.5, abs=0.01)


def test_finding_one_of_two_equal_regions_gives_half():
    rng = np.random.default_rng(2)
    mask = _two_regions()
    heatmap = 0.1 + 0.4 * rng.random(mask.shape)
    heatmap[8:20, 8:20] = 1.0  # found
    heatmap[40:52, 30:42] = 0.0  # missed: below every normal pixel
    assert aupro([mask], [heatmap]) == pytest.approx(0.5)


def test_regions_count_equally_regardless_of_size():
    # Pixel AUROC rewards finding the big defect; AUPRO only credits one region of two.
    mask = np.zeros((64, 64), dtype=bool)
    mask[0:40, 0:40] = True
    mask[60:62, 60:62] = True
    heatmap = np.full(mask.shape, 0.3)
    heatmap[0:40, 0:40] = 1.0
    heatmap[60:62, 60:62] = 0.0
    assert pixel_auroc([mask], [heatmap]) > 0.99
    assert aupro([mask], [heatmap]) == pytest.approx(0.5)


def _defect_maps(rng, count: int, side: int, regions: list, heatmap_of) -> tuple[list, list]:
    """``count`` square masks with the same defect ``regions`` (index expressions) and a heatmap for each."""
    masks, heatmaps = [], []
    for _ in range(count):
        mask = np.zeros((side, side), dtype=np.uint8)
        for region in regions:
            mask[region] = 1
        masks.append(mask)
        heatmaps.append(heatmap_of(mask))
    return masks, heatmaps


def test_aupro_matches_slow_reference_on_small_example():
    rng = np.random.default_rng(3)
    # a single-pixel region weighs as much as the others; quantised scores exercise ties between
    # normal and defect pixels
    masks, heatmaps = _defect_maps(rng, 3, 12, [(slice(1, 4), slice(2, 6)), (slice(7, 11), slice(7, 9)), (5, 0)],
                                   lambda mask: np.round(rng.random(mask.shape) * 20) / 20 + 0.3 * mask)
    masks.append(np.zeros((12, 12), dtype=np.uint8))
    heatmaps.append(rng.random((12, 12)))
    for limit in (0.05, 0.3, 1.0):
        assert aupro(masks, heatmaps, fpr_limit=limit) == pytest.approx(
            _reference_aupro(masks, heatmaps, limit), abs=1e-12
        )


def test_aupro_close_to_reference_on_larger_maps():
    # More pixels than sweep thresholds: the quantile sweep must stay within its error bound.
    rng = np.random.default_rng(4)
    masks, heatmaps = _defect_maps(rng, 4, 64, [(slice(10, 30), slice(5, 25)), (slice(40, 44), slice(40, 60))],
                                   lambda mask: rng.random(mask.shape) + 0.5 * mask)
    assert aupro(masks, heatmaps) == pytest.approx(_reference_aupro(masks, heatmaps), abs=1e-3)


def test_image_auroc_and_f1_hand_example():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9])
    # Pairs anomalous > normal: 0.35 beats 1, 0.7 and 0.9 beat 3 each -> 7 of 9.
    assert image_auroc(labels, scores) == pytest.approx(7 / 9)
    # At 0.7: TP 2, FP 0, FN 1 -> F1 0.8; at 0.35: TP 3, FP 2 -> 0.75; at 0.6: TP 2, FP 1, FN 1 -> 2/3.
    f1, threshold = best_f1(labels, scores)
    assert f1 == pytest.approx(0.8)
    assert threshold == pytest.approx(0.7)
    assert f1_at(labels, scores, 0.5) == pytest.approx(2 / 3)  # TP 2, FP 1, FN 1
    assert f1_at(labels, scores, 0.35) == pytest.approx(0.75)  # score == threshold counts as anomalous


def test_undefined_metrics_are_nan():
    clean = [np.zeros((8, 8), dtype=bool)] * 2
    maps = [np.random.default_rng(5).random((8, 8))] * 2
    assert math.isnan(pixel_auroc(clean, maps))
    assert math.isnan(aupro(clean, maps))
    assert math.isnan(pixel_auroc([], []))
    assert math.isnan(aupro([], []))
    full = [np.ones((8, 8), dtype=bool)]
    assert math.isnan(aupro(full, maps[:1]))  # no normal pixels: FPR undefined
    assert math.isnan(image_auroc(np.array([1, 1]), np.array([0.2, 0.8])))
    assert math.isnan(image_auroc(np.array([0, 0]), np.array([0.2, 0.8])))
    assert all(math.isnan(v) for v in best_f1(np.array([0, 0]), np.array([0.2, 0.8])))
    assert math.isnan(f1_at(np.array([0, 0]), np.array([0.2, 0.8]), 0.5))


def test_mismatched_shapes_name_the_image():
    masks = [np.zeros((8, 8), dtype=bool), np.zeros((8, 8), dtype=bool)]
    heatmaps = [np.zeros((8, 8)), np.zeros((8, 9))]
    with pytest.raises(ValueError, match="image 1"):
        pixel_auroc(masks, heatmaps)
    with pytest.raises(ValueError, match="image 1"):
        aupro(masks, heatmaps)
    with pytest.raises(ValueError, match="2 masks but 1 heatmaps"):
        aupro(masks, heatmaps[:1])
