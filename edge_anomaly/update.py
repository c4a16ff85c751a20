"""Updating a fitted memory-bank model (PatchCore) with new normal images, without refitting it.

Reviewed false alarms ("this was normal") are exactly the parts the memory bank lacks. They are
embedded with the model's own graph (same input size, ROI and centre crop as in fit) and the
template adds them to its bank (``MemoryBankScorer.add_normals``; PatchCore: a greedy coreset of
their patches at the same ratio, appended): the existing entries stay, so nothing the model knew
is forgotten.

The threshold is then recalibrated as in fit, from held-out normal scores: the training
images' scores stored in the model (``calibration.safetensors``) plus each new image's score
against the updated bank without its own fold's new entries (contiguous folds, as in fit, so
neighbouring frames are held out together). The stored scores are kept as they are: added
entries can only bring a training image's nearest neighbour closer, so they stay a slightly
conservative estimate. The global-statistics reference (lighting, blur) is refitted on the
stored training statistics plus the new images', weighted by image count, so a new normal
lighting stops reading as a lighting fault. Templates whose scorer is not a ``MemoryBankScorer``
(PaDiM, the student-teacher) are refused: their normal model is not a bank of examples that new
images can be appended to.

A reviewer's "normal" is trusted only so far: every image is scored by the model before it is
added, and one scoring more than ``SUSPECT_SPREADS`` spreads past the threshold (a defect, not a
missed normal: a false alarm sits near the threshold) is refused, all of them listed, unless
``force``. The images come in under the runtime's rules for files from outside: the pixel limit
read from the header before decoding, and no symbolic links (a link could pull in any file).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np

from edge_anomaly.calibration import false_alarm_threshold
from edge_anomaly.data.folders import crop_region
from edge_anomaly.model import CalibrationData, TrainedModel
from edge_anomaly.templates import MemoryBankScorer, updatable_templates
from edge_anomaly.training import (
    contiguous_folds,
    embed_images,
    global_checks_scoring,
    score_summary,
    with_augmentations,
)
from runtime.global_stats import capture_statistics, image_statistics
from runtime.image_io import IMAGE_SUFFIXES, MAX_PIXELS, ImageReadError, read_image
from runtime.preprocess import frame_to_input
from runtime.scoring import Scoring

SUSPECT_SPREADS = 2.0  # past the threshold by this many spreads of the local score: a defect, refused


def reviewed_images(folder: str | Path, size_hw: tuple[int, int], roi,
                    center_crop) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(model inputs, capture statistics, names) of the images under ``folder``; ValueError naming every file
    that breaks the runtime's rules (a symbolic link, a header over ``MAX_PIXELS``, an undecodable file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of reviewed images")
    images, capture, names, refused = [], [], [], []
    for root, folders, files in os.walk(folder):  # links to folders are listed, never followed
        for name in sorted(folders + files):
            path = Path(root) / name
            if path.is_symlink():
                refused.append(f"{path}: a symbolic link (update takes only the folder's own files)")
            elif name in files and path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    frame = read_image(path, MAX_PIXELS)
                except ImageReadError as exc:
                    refused.append(str(exc))
                    continue
                region = crop_region(frame.shape[:2], roi, center_crop, path)
                images.append(frame_to_input(frame, size_hw, region=region))
                capture.append(capture_statistics(frame, region))
                names.append(str(path.relative_to(folder)))
        folders.sort()
    if refused:
        raise ValueError(f"update: {len(refused)} file(s) refused, nothing added:\n  " + "\n  ".join(refused))
    if not images:
        raise ValueError(f"{folder}: no images to add (looked for {', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.stack(capture), names


def far_above_threshold(model: TrainedModel, images: np.ndarray, names: list[str]) -> list[str]:
    """The images the model scores more than ``SUSPECT_SPREADS`` spreads past its threshold, with their scores."""
    local = model.scoring.local
    _, scores = model.infer(images)
    limit = local.threshold + SUSPECT_SPREADS * local.spread
    return [f"{name} (score {score:.4g}, threshold {local.threshold:.4g})"
            for name, score in zip(names, scores.tolist(), strict=True) if score > limit]


def update_model(model: TrainedModel, folder: str | Path, force: bool = False) -> TrainedModel:
    """``model`` with the normal images under ``folder`` added to its bank and its threshold recalibrated;
    images it scores far above its threshold are refused (ValueError listing them) unless ``force``."""
    if not isinstance(model.graph.scorer, MemoryBankScorer):
        raise ValueError(f"update: a {model.template} model cannot be updated with new images (its normal model is "
                         f"not a memory bank); refit it with the new images added to its training folder "
                         f"(edge-anomaly fit), or use --template {' or '.join(updatable_templates())}")
    if model.calibration_data is None:
        raise ValueError("update: this model was saved without its calibration scores (calibration.safetensors; "
                         "models fitted before edge-anomaly kept them): refit it once, then it can be updated")
    started = time.perf_counter()
    params = model.params
    images, capture, names = reviewed_images(folder, model.input_size, params.roi, params.center_crop)
    suspects = far_above_threshold(model, images, names)
    if suspects and not force:
        raise ValueError(f"update: {len(suspects)} of {len(images)} image(s) score far above the threshold: defects "
                         "reviewed as normal would teach the model to pass them; nothing added. Take them out, or "
                         "add them anyway with --force:\n  " + "\n  ".join(suspects))
    folds = contiguous_folds(len(images), params.calibration_folds)
    augmented, aug_folds = with_augmentations(images, folds, list(params.augment), params.seed)
    graph = copy.deepcopy(model.graph)  # the given model stays as it was
    scorer: MemoryBankScorer = graph.scorer
    old_size = scorer.bank_entries
    new_scores = scorer.add_normals(embed_images(graph, augmented, params.batch_size), aug_folds, params.batch_size)
    old = model.calibration_data
    data = CalibrationData(np.concatenate([old.normal_scores, new_scores]),
                           np.concatenate([old.image_stats, np.stack([image_statistics(x) for x in images])]),
                           None if old.capture_stats is None else np.concatenate([old.capture_stats, capture]),
                           old.varied_image_stats, old.varied_capture_stats)
    scoring, calibration = _recalibrated(model, data)
    record = {
        "folder": str(Path(folder).resolve()),
        "n_images": len(images),
        "n_augmented": len(augmented) - len(images),
        "forced": suspects,
        "bank_entries": [int(old_size), int(scorer.bank_entries)],
        "threshold": [model.scoring.local.threshold, scoring.local.threshold],
        "new_scores": score_summary(new_scores),
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info = {**model.info, "calibration": calibration, "updates": [*model.info.get("updates", []), record],
            "normal_scores": score_summary(data.normal_scores)}
    return TrainedModel(model.template, params, graph, scoring, info, data, model.capture_profile)


def _recalibrated(model: TrainedModel, data: CalibrationData) -> tuple[Scoring, dict]:
    """(the scoring, the calibration record) from the updated calibration data, as fit makes them; a threshold
    chosen on defect examples (F1) is kept, since an update has none."""
    previous = model.info.get("calibration", {})
    if previous.get("method") == "f1":
        local, calibration = model.scoring.local, previous
    else:
        local, fitted = false_alarm_threshold(data.normal_scores, model.params.false_alarm_rate)
        calibration = fitted.to_dict()
    scoring = global_checks_scoring(local, *data.checked_stats(), model.params.global_check_margin) \
        if model.scoring.checks_global else Scoring(local=local)
    return scoring, calibration
