"""The images an export needs: normal ones to calibrate INT8, and a labelled set for the parity check.

Both come from the model's training folder (``model.info["training_set"]["folder"]``), cropped
to the model's region of interest: a share of its images (re-derived from the seed) forms the
parity set and the rest calibrates INT8, and when the folder is an MVTec category's
``train/good`` a bounded, evenly spaced sample of the category's test set adds defects with masks.
``--calibration-data DIR`` replaces the training folder (a folder of normal images or an MVTec category root).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_anomaly.data.folders import load_inputs, mvtec_test_set, read_mask
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.model import TrainedModel
from edge_anomaly.training import split_holdout

log = logging.getLogger(__name__)

MAX_CALIBRATION_IMAGES = 64  # MinMax ranges settle well before this on a few hundred normal images
MAX_TEST_IMAGES = 40  # defect sample for the parity check: enough for AUROC, cheap enough for every export


@dataclass
class ParitySet:
    """Labelled images at the model's input size; ``masks[i]`` is None where no pixel truth exists."""

    images: np.ndarray
    labels: np.ndarray
    masks: list[np.ndarray | None]
    description: dict


@dataclass
class ExportData:
    calibration: np.ndarray  # normal images, uint8 NHWC
    parity: ParitySet


def _evenly_spaced(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _test_sample(category: Path, model: TrainedModel) -> tuple[np.ndarray, list[int], list, int]:
    size_hw, roi, center_crop = model.input_size, model.params.roi, model.params.center_crop
    samples = _evenly_spaced(mvtec_test_set(category), MAX_TEST_IMAGES)
    images, kept = load_inputs([s.path for s in samples], size_hw, roi=roi, center_crop=center_crop)
    by_path = {s.path: s for s in samples}
    labels, masks = [], []
    for path in kept:
        sample = by_path[path]
        labels.append(sample.label)
        if sample.label == 0:
            masks.append(np.zeros(size_hw, dtype=bool))
        else:
            mask = read_mask(sample.mask_path, size_hw, roi, center_crop) if sample.mask_path else None
            masks.append(mask if mask is not None and mask.any() else None)
    return images, labels, masks, len(samples)


def export_data(model: TrainedModel, calibration_data: str | Path | None = None) -> ExportData:
    """Calibration images and the parity set for ``model``; raises naming the folder when there are none."""
    training = model.info.get("training_set", {})
    recorded = training.get("folder")
    if calibration_data is not None:
        training_set, source = TrainingSet.scan(calibration_data), "calibration-data"
    elif recorded and Path(recorded).exists():
        video = training.get("video") or {}
        training_set = TrainingSet.scan(recorded, video.get("every_nth", 1), video.get("max_frames"))
        source = "training folder"
    else:
        raise FileNotFoundError(
            f"the model's training folder {recorded!r} no longer exists; the parity check and INT8 calibration "
            "need normal images: pass --calibration-data DIR (normal images or an MVTec category root)")
    size = model.input_size
    folder = training_set.folder
    images, _ = training_set.load(size, model.params.roi, model.params.center_crop)
    if len(images) < 6:
        raise ValueError(f"{folder}: found {len(images)} usable images, the export checks need at least 6")
    description: dict = {"normal_folder": str(folder), "source": source}
    if source == "training folder" and training_set.fingerprint() != training.get("fingerprint"):
        log.warning("%s changed since the model was fitted (fingerprint mismatch)", folder)
        description["warning"] = "training folder changed since fitting (fingerprint mismatch)"
    fit_index, held_index = split_holdout(len(images), model.params.holdout_fraction, model.params.seed)
    calibration = images[_evenly_spaced(list(fit_index), MAX_CALIBRATION_IMAGES)]
    parity_images, labels = images[held_index], [0] * len(held_index)
    masks: list = [np.zeros(size, dtype=bool)] * len(held_index)
    description["normal_holdout"] = len(held_index)
    category = folder.parent.parent
    if folder.parts[-2:] == ("train", "good") and (category / "test").is_dir():
        test_images, test_labels, test_masks, _ = _test_sample(category, model)
        parity_images = np.concatenate([parity_images, test_images])
        labels += test_labels
        masks += test_masks
        description.update(test_folder=str(category / "test"), test_images=len(test_labels),
                           defective=int(sum(test_labels)))
    return ExportData(calibration, ParitySet(parity_images, np.asarray(labels), masks, description))
