"""Fitting a template on normal images, then calibrating its threshold for a false-alarm rate.

Every training image is fitted. Calibration scores each one with a model that did not see it
(a k-fold over the training set, in contiguous blocks so that neighbouring video frames fall in
the same fold), and a tail fit of those scores sets the threshold for the target false-alarm
rate. Given defect examples, the F1-optimal threshold is used instead. The lighting and blur
checks are calibrated on the training images' whole-image statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_anomaly.calibration import Calibration, f1_scale, false_alarm_threshold, quantile_scale
from edge_anomaly.data.augment import compressed_copies
from edge_anomaly.data.capture import varied_copy
from edge_anomaly.data.training_set import TrainingSet, input_size_for
from edge_anomaly.graph import AnomalyGraph
from edge_anomaly.model import CalibrationData, TrainedModel, build_graph, run_graph
from edge_anomaly.progress import make_progress
from edge_anomaly.templates import TemplateParams, get_template
from runtime.global_stats import CAPTURE_STATS, STAT_NAMES, GlobalStats, image_statistics
from runtime.scoring import ScoreScale, Scoring

log = logging.getLogger(__name__)

MIN_TRAINING_IMAGES = 6
GLOBAL_CHECK_QUANTILE = 0.99
CAPTURE_CHECK_MARGIN = 0.5  # half the lighting checks' default: the varied copies already span the tolerance


def split_holdout(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): at least 3 held out and 3 to fit."""
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(3, round(count * fraction)), count - 3)
    return np.sort(order[held:]), np.sort(order[:held])


def contiguous_folds(count: int, folds: int) -> np.ndarray:
    """Fold number of each of ``count`` items, in contiguous blocks of (nearly) equal size."""
    return (np.arange(count) * min(folds, count) // max(count, 1)).astype(np.int64)


def with_input_size(params: TemplateParams, aspect: float,
                    size_problem: Callable[[tuple[int, int]], str | None] | None = None) -> TemplateParams:
    """``params`` with a concrete input size: the given one, else the largest within ``max_input_pixels``
    that keeps ``aspect`` (width / height) and that ``size_problem`` (a board's limits) does not refuse;
    the budget shrinks until the board allows it."""
    if params.input_size is not None:
        return params
    budget = params.max_input_pixels
    size = input_size_for(aspect, budget)
    while size_problem is not None and size_problem(size) is not None and budget > 2 * 64 * 64:
        budget = int(budget * 0.8)
        size = input_size_for(aspect, budget)
    return params.model_copy(update={"input_size": size, "max_input_pixels": budget})


def with_augmentations(images: np.ndarray, folds: np.ndarray, kinds: list[str],
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training images plus their compressed copies; each copy stays in its original's fold."""
    if not kinds:
        return images, folds
    parts, part_folds = [images], [folds]
    for fold in np.unique(folds):
        copies = compressed_copies(images[folds == fold], kinds, seed + int(fold))
        parts.append(copies)
        part_folds.append(np.full(len(copies), fold))
    return np.concatenate(parts), np.concatenate(part_folds)


def varied_copies(training: TrainingSet, size: tuple[int, int], params: TemplateParams,
                  advance: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, capture statistics) of ``params.capture_tolerance.copies`` copies of every training image, each
    varied as a camera varies (:func:`varied_copy`, at the frame's own resolution), copy after copy in the
    originals' order."""
    tolerance = params.capture_tolerance
    rng = np.random.default_rng(params.seed + 1)
    loads = [training.load_with_capture(size, params.roi, params.center_crop, advance,
                                        vary=lambda frame: varied_copy(frame, tolerance, rng))
             for _ in range(tolerance.copies)]
    if not loads:
        return np.zeros((0, *size, 3), np.uint8), np.zeros((0, len(CAPTURE_STATS)))
    return np.concatenate([images for images, _, _ in loads]), np.concatenate([capture for _, capture, _ in loads])


@dataclass(frozen=True)
class TrainingImages:
    """What a fit learns from: the originals, their compressed and varied copies, and each image's fold."""

    originals: np.ndarray
    capture: np.ndarray  # the originals' capture statistics
    varied: np.ndarray  # the copies varied within the capture tolerance
    varied_capture: np.ndarray
    images: np.ndarray  # originals, compressed copies, varied copies: everything the model learns
    folds: np.ndarray  # each image's calibration fold (a copy is in its original's)
    calibrated: np.ndarray  # bool per image: the threshold rests on these (not the varied copies)

    @classmethod
    def read(cls, training: TrainingSet, size: tuple[int, int], params: TemplateParams, progress) -> TrainingImages:
        task = progress.add_task("reading the training images", total=None)
        originals, capture, _ = training.load_with_capture(size, params.roi, params.center_crop,
                                                           lambda: progress.advance(task))
        if len(originals) < MIN_TRAINING_IMAGES:
            raise ValueError(f"{training.folder}: found {len(originals)} usable images, "
                             f"need at least {MIN_TRAINING_IMAGES}")
        progress.update(task, total=len(originals))
        folds = contiguous_folds(len(originals), params.calibration_folds)
        images, folds = with_augmentations(originals, folds, list(params.augment), params.seed)
        copies = params.capture_tolerance.copies
        task = progress.add_task("varying copies as a camera would (capture_tolerance)", total=len(originals) * copies)
        varied, varied_capture = varied_copies(training, size, params, lambda: progress.advance(task))
        # The varied copies are learned, not calibrated on: the threshold rests on the line's own images (and
        # their compressed copies), whose count is what a false-alarm promise can honestly rest on.
        calibrated = np.arange(len(images) + len(varied)) < len(images)
        return cls(originals, capture, varied, varied_capture, np.concatenate([images, varied]),
                   np.concatenate([folds, np.tile(folds[:len(originals)], copies)]), calibrated)


def embed_images(graph: AnomalyGraph, images: np.ndarray, batch_size: int, advance=None) -> torch.Tensor:
    """The scorer's per-position embeddings of uint8 NHWC images (an embedding scorer's)."""
    return graph.scorer.embed_images(graph.extractor, images, batch_size, advance)


def fit_model(data: str | Path, template_name: str, params: TemplateParams, defects: str | Path | None = None,
              every_nth: int = 1, max_frames: int | None = None,
              training: TrainingSet | None = None) -> TrainedModel:
    """Fit ``template_name`` on the normal images (and video frames) under ``data`` and calibrate it."""
    get_template(template_name)  # an unknown template fails here, before the images are read
    training = training or TrainingSet.scan(data, every_nth, max_frames)
    if params.input_size is None:
        params = with_input_size(params, training.aspect_ratio(params.roi, params.center_crop))
    size = tuple(params.input_size)
    started = time.perf_counter()
    with make_progress() as progress:
        sets = TrainingImages.read(training, size, params, progress)
        graph = build_graph(template_name, params, pretrained=True)
        extractor, scorer = graph.extractor, graph.scorer
        scorer.copies_per_image = len(sets.images) / len(sets.originals)
        # the template's own way: k-fold for one fitted on embeddings, a held-out share for one trained on images
        normal_scores, fitted = scorer.fit_training(extractor, sets.images, sets.folds, sets.calibrated, progress)
        local, calibration = _threshold(graph, normal_scores, params, defects)
    if calibration.method != "f1" and calibration.note:
        log.warning("%s", calibration.note)

    # The varied copies calibrate the global checks too: what the model was taught to tolerate is normal.
    calibration_data = CalibrationData(normal_scores, _image_stats(sets.originals), sets.capture,
                                       _image_stats(sets.varied), sets.varied_capture)
    scoring = global_checks_scoring(local, *calibration_data.checked_stats(), params.global_check_margin) \
        if params.global_checks else Scoring(local=local)
    info = {**_fit_info(training, sets, calibration, normal_scores), "fit_seconds": round(fitted - started, 2),
            **({"training": scorer.training_info} if scorer.training_info else {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return TrainedModel(template_name, params, graph, scoring, info, calibration_data,
                        training.capture_profile(sets.capture))


def _threshold(graph: AnomalyGraph, normal_scores: np.ndarray, params: TemplateParams,
               defects: str | Path | None) -> tuple[ScoreScale, Calibration]:
    """The threshold for the false-alarm rate, or F1-optimal on the ``defects`` folder's images."""
    if defects is None:
        return false_alarm_threshold(normal_scores, params.false_alarm_rate)
    defect_images, _ = TrainingSet.scan(defects).load(tuple(params.input_size), params.roi, params.center_crop)
    return f1_scale(normal_scores, run_graph(graph, defect_images, params.batch_size)[1])


def _fit_info(training: TrainingSet, sets: TrainingImages, calibration: Calibration, normal_scores: np.ndarray) -> dict:
    """What model.json records about the training set and the calibration."""
    return {
        "training_set": {
            "folder": str(training.folder),
            "n_images": len(sets.originals),
            "n_augmented": len(sets.images) - len(sets.originals),
            "n_sources": len(training.sources),
            "video": {"every_nth": training.every_nth, "max_frames": training.max_frames} if training.has_video
            else None,
            "fingerprint": training.fingerprint(),
        },
        "threshold_mode": calibration.method,
        "calibration": calibration.to_dict(),
        "normal_scores": score_summary(normal_scores),
    }


def score_summary(scores: np.ndarray) -> dict:
    """(min, median, max) of raw scores, as model.json records them."""
    return {"min": float(scores.min()), "median": float(np.median(scores)), "max": float(scores.max())}


def _image_stats(images: np.ndarray) -> np.ndarray:
    return np.stack([image_statistics(x) for x in images]) if len(images) else np.zeros((0, len(STAT_NAMES)))


def global_checks_scoring(local: ScoreScale, stats: np.ndarray, capture: np.ndarray | None, margin: float) -> Scoring:
    """``local`` plus lighting and blur checks calibrated on the (images, STAT_NAMES) statistics of normal images
    (``margin``: see ``global_check_margin``), and noise and compression checks on their (images, CAPTURE_STATS)
    capture statistics (None: none).

    Whole-image statistics are cheap and unbiased enough in-sample, so every training image
    calibrates their thresholds.
    """
    global_stats = GlobalStats.fit(stats)
    lighting, blur = global_stats.deviation_scores(stats)
    checks: dict = {}
    if capture is not None:
        # The varied copies already span the tolerated noise and compression, so the checks sit close to their
        # edge: CAPTURE_CHECK_MARGIN, not the lighting checks' margin.
        capture_stats = GlobalStats.fit(capture, CAPTURE_STATS)
        deviation = capture_stats.capture_deviation(capture)
        checks.update(capture_stats=capture_stats,
                      noise=quantile_scale(deviation["noise"], GLOBAL_CHECK_QUANTILE, CAPTURE_CHECK_MARGIN),
                      compression=quantile_scale(deviation["compression"], GLOBAL_CHECK_QUANTILE,
                                                 CAPTURE_CHECK_MARGIN))
    return Scoring(local=local, global_stats=global_stats,
                   lighting=quantile_scale(lighting, GLOBAL_CHECK_QUANTILE, margin),
                   blur=quantile_scale(blur, GLOBAL_CHECK_QUANTILE, margin), **checks)
