"""Updating a fitted PatchCore model with new normal images, without refitting it.

Reviewed false alarms ("this was normal") are exactly the parts the memory bank lacks. Their
patches are embedded with the model's own graph (same input size, ROI and centre crop as in
fit), subsampled by the same greedy coreset at the same ratio, and appended to the bank: the
existing entries stay, so nothing the model knew is forgotten and the update costs one
coreset of the new images alone.

The threshold is then recalibrated as in fit, from held-out normal scores: the training
images' scores stored in the model (``calibration.safetensors``) plus each new image's score
against the updated bank without its own fold's new entries (contiguous folds, as in fit, so
neighbouring frames are held out together). The stored scores are kept as they are: added
entries can only bring a training image's nearest neighbour closer, so they stay a slightly
conservative estimate. The global-statistics reference (lighting, blur) is refitted on the
stored training statistics plus the new images', weighted by image count, so a new normal
lighting stops reading as a lighting fault. PaDiM and the student-teacher are refused: their
normal model is not a bank of examples that new images can be appended to.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from edge_anomaly.calibration import false_alarm_threshold
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.model import CalibrationData, TrainedModel
from edge_anomaly.templates.patchcore import PatchCoreScorer
from edge_anomaly.training import contiguous_folds, embed_images, global_checks_scoring, with_augmentations
from runtime.global_stats import image_statistics
from runtime.scoring import Scoring

UPDATABLE_TEMPLATES = ("patchcore",)


def update_model(model: TrainedModel, folder: str | Path) -> TrainedModel:
    """``model`` with the normal images under ``folder`` added to its bank and its threshold recalibrated."""
    if model.template not in UPDATABLE_TEMPLATES:
        raise ValueError(f"update: a {model.template} model cannot be updated with new images (its normal model is "
                         f"not a memory bank); refit it with the new images added to its training folder "
                         f"(edge-anomaly fit), or use --template patchcore")
    if model.calibration_data is None:
        raise ValueError("update: this model was saved without its calibration scores (calibration.safetensors; "
                         "models fitted before edge-anomaly kept them): refit it once, then it can be updated")
    started = time.perf_counter()
    params = model.params
    images, capture, _ = TrainingSet.scan(folder).load_with_capture(model.input_size, params.roi, params.center_crop)
    if len(images) == 0:
        raise ValueError(f"{folder}: no readable images to add")
    folds = contiguous_folds(len(images), params.calibration_folds)
    augmented, aug_folds = with_augmentations(images, folds, list(params.augment), params.seed)
    graph = copy.deepcopy(model.graph)  # the given model stays as it was
    scorer: PatchCoreScorer = graph.scorer
    embeddings = embed_images(graph, augmented, params.batch_size)
    added, source = scorer.coreset(embeddings, min_size=1)
    old_size = scorer.memory_bank.shape[0]
    scorer.set_bank(torch.cat([scorer.memory_bank, added]))
    # each new image is scored without its own fold's new entries; the old entries are never masked
    entry_fold = np.concatenate([np.full(old_size, -1), aug_folds[source]])
    new_scores = scorer.masked_fold_scores(embeddings, aug_folds, entry_fold, params.batch_size)

    old = model.calibration_data
    normal_scores = np.concatenate([old.normal_scores, new_scores])
    stats = np.concatenate([old.image_stats, np.stack([image_statistics(x) for x in images])])
    data = CalibrationData(normal_scores, stats,
                           None if old.capture_stats is None else np.concatenate([old.capture_stats, capture]),
                           old.varied_image_stats, old.varied_capture_stats)
    previous = model.info.get("calibration", {})
    if previous.get("method") == "f1":
        local = model.scoring.local  # chosen on defect examples this update does not have: kept as it was
        calibration = previous
    else:
        local, fitted = false_alarm_threshold(normal_scores, params.false_alarm_rate)
        calibration = fitted.to_dict()
    scoring = global_checks_scoring(local, *data.checked_stats(), params.global_check_margin) \
        if model.scoring.reference is not None else Scoring(local=local)
    record = {
        "folder": str(Path(folder).resolve()),
        "n_images": len(images),
        "n_augmented": len(augmented) - len(images),
        "bank_entries": [int(old_size), int(scorer.memory_bank.shape[0])],
        "threshold": [model.scoring.local.threshold, local.threshold],
        "new_scores": {"min": float(new_scores.min()), "median": float(np.median(new_scores)),
                       "max": float(new_scores.max())},
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info = {**model.info, "calibration": calibration, "updates": [*model.info.get("updates", []), record],
            "normal_scores": {"min": float(normal_scores.min()), "median": float(np.median(normal_scores)),
                              "max": float(normal_scores.max())}}
    return TrainedModel(model.template, params, graph, scoring, info, data)
