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
from edge_anomaly.templates.base import batched_image_scores
from edge_anomaly.templates.coreset import greedy_coreset
from edge_anomaly.templates.patchcore import PatchCoreScorer
from edge_anomaly.training import contiguous_folds, embed_images, global_checks_scoring, with_augmentations
from runtime.global_stats import image_statistics
from runtime.scoring import Scoring

UPDATABLE_TEMPLATES = ("patchcore",)


def _bank_with(scorer: PatchCoreScorer, bank: torch.Tensor) -> PatchCoreScorer:
    """A scorer like ``scorer`` searching ``bank`` instead (norms and neighbour table recomputed)."""
    other = PatchCoreScorer(scorer.params, scorer.feature_shapes)
    other.memory_bank = bank.contiguous()
    other.bank_sq_norms = (other.memory_bank * other.memory_bank).sum(dim=1)
    other.bank_neighbors = other._bank_self_neighbors(other.memory_bank, min(scorer.params.num_neighbors, len(bank)))
    return other


def new_bank_entries(scorer: PatchCoreScorer, embeddings: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """(coreset of the new images' patches at the model's coreset ratio, source image of each entry)."""
    patches = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
    size = min(patches.shape[0], max(1, round(patches.shape[0] * scorer.params.coreset_ratio)))
    index = greedy_coreset(patches, size, projection_dim=scorer.params.projection_dim, seed=scorer.params.seed) \
        if size < patches.shape[0] else torch.arange(patches.shape[0])
    return patches[index].contiguous(), (index // (embeddings.shape[2] * embeddings.shape[3])).numpy()


@torch.no_grad()
def held_out_new_scores(scorer: PatchCoreScorer, old_bank: torch.Tensor, added: torch.Tensor, source: np.ndarray,
                        embeddings: torch.Tensor, folds: np.ndarray, batch_size: int) -> np.ndarray:
    """Each new image's score against the old bank plus the new entries of the other folds."""
    scores = np.empty(len(embeddings), np.float64)
    entry_fold = folds[source]
    for fold in np.unique(folds):
        keep = torch.from_numpy(entry_fold != fold)
        held = np.flatnonzero(folds == fold)
        masked = _bank_with(scorer, torch.cat([old_bank, added[keep]]))
        scores[held] = batched_image_scores(masked, embeddings[held], batch_size)
    return scores


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
    images, _ = TrainingSet.scan(folder).load(model.input_size, params.roi, params.center_crop)
    if len(images) == 0:
        raise ValueError(f"{folder}: no readable images to add")
    folds = contiguous_folds(len(images), params.calibration_folds)
    augmented, aug_folds = with_augmentations(images, folds, list(params.augment), params.seed)
    graph = copy.deepcopy(model.graph)  # the given model stays as it was
    scorer: PatchCoreScorer = graph.scorer
    embeddings = embed_images(graph, augmented, params.batch_size)
    added, source = new_bank_entries(scorer, embeddings)
    old_bank = scorer.memory_bank
    new_scores = held_out_new_scores(scorer, old_bank, added, source, embeddings, aug_folds, params.batch_size)
    updated = _bank_with(scorer, torch.cat([old_bank, added]))
    scorer.memory_bank, scorer.bank_sq_norms, scorer.bank_neighbors = (
        updated.memory_bank, updated.bank_sq_norms, updated.bank_neighbors)

    old = model.calibration_data
    normal_scores = np.concatenate([old.normal_scores, new_scores])
    stats = np.concatenate([old.image_stats, np.stack([image_statistics(x) for x in images])])
    previous = model.info.get("calibration", {})
    if previous.get("method") == "f1":
        local = model.scoring.local  # chosen on defect examples this update does not have: kept as it was
        calibration = previous
    else:
        local, fitted = false_alarm_threshold(normal_scores, params.false_alarm_rate)
        calibration = fitted.to_dict()
    scoring = global_checks_scoring(local, stats, params.global_check_margin) \
        if model.scoring.reference is not None else Scoring(local=local)
    record = {
        "folder": str(Path(folder).resolve()),
        "n_images": len(images),
        "n_augmented": len(augmented) - len(images),
        "bank_entries": [int(old_bank.shape[0]), int(scorer.memory_bank.shape[0])],
        "threshold": [model.scoring.local.threshold, local.threshold],
        "new_scores": {"min": float(new_scores.min()), "median": float(np.median(new_scores)),
                       "max": float(new_scores.max())},
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info = {**model.info, "calibration": calibration, "updates": [*model.info.get("updates", []), record],
            "normal_scores": {"min": float(normal_scores.min()), "median": float(np.median(normal_scores)),
                              "max": float(normal_scores.max())}}
    return TrainedModel(model.template, params, graph, scoring, info, CalibrationData(normal_scores, stats))
