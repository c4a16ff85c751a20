"""Running a trained model over an MVTec-layout test set and scoring it against the masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_anomaly.data.folders import load_inputs_with_capture, mvtec_test_set, read_mask
from edge_anomaly.evaluation.capture import VARIATIONS, capture_table
from edge_anomaly.evaluation.report import EvalRecord, compute_metrics, write_report
from edge_anomaly.model import METADATA_FILE, TrainedModel
from edge_anomaly.progress import make_progress
from runtime.bundle import sha256_file
from runtime.image_io import read_image


def _mask_for(sample, size_hw: tuple[int, int], params) -> np.ndarray | None:
    """All-False for good images; the defect mask, or None when there is no usable one
    (global defects such as lighting have none, or an empty one)."""
    if sample.label == 0:
        return np.zeros(size_hw, dtype=bool)
    if sample.mask_path is None:
        return None
    mask = read_mask(sample.mask_path, size_hw, params.roi, params.center_crop)
    return mask if mask.any() else None


def model_identity(model: TrainedModel, folder: str | Path | None = None) -> dict:
    """What a quality engineer needs to tell which model a report is about: the template, input size,
    training count, raw threshold, when it was made, and (for a saved model) the SHA-256 of its
    ``model.json``, which lists its files' hashes."""
    metadata = Path(folder) / METADATA_FILE if folder is not None else None
    return {
        "template": model.template,
        "input_size": list(model.input_size),
        "training_images": model.info.get("training_set", {}).get("n_images"),
        "raw_threshold": float(model.scoring.local.threshold),
        "created": model.info.get("created"),
        "folder": str(folder) if folder is not None else None,
        "hash": sha256_file(metadata) if metadata is not None and metadata.is_file() else None,
        "params": model.params.model_dump(mode="json"),
    }


def evaluate_model(model: TrainedModel, data: str | Path, report_dir: str | Path | None = None,
                   title: str | None = None, model_folder: str | Path | None = None,
                   category: str | None = None, capture: bool = False) -> dict:
    """Metrics of ``model`` on the test set under ``data``; writes the report when asked.

    Pixel metrics are computed at the model's input size. ``category`` names the part in the
    report (default: the data folder's name); ``model_folder`` is where the model was saved, for
    its hash. ``capture`` adds the verdicts on the good images under a camera's ordinary
    variations, and on the defects under sensor noise
    (:func:`edge_anomaly.evaluation.capture.capture_table`), as ``metrics["capture"]``.
    """
    samples = mvtec_test_set(data)
    size = model.input_size
    with make_progress() as progress:
        task = progress.add_task("reading test images", total=len(samples))
        inputs, capture_stats, kept = load_inputs_with_capture([s.path for s in samples], size,
                                                         lambda: progress.advance(task), model.params.roi,
                                                         model.params.center_crop)
        by_path = {s.path: s for s in samples}
        samples = [by_path[path] for path in kept]
        task = progress.add_task("scoring", total=len(samples))
        records = []
        batch = model.params.batch_size
        for start in range(0, len(samples), batch):
            heatmaps, scores = model.infer(inputs[start:start + batch])
            for offset, (heatmap, score) in enumerate(zip(heatmaps, scores, strict=True)):
                sample, image = samples[start + offset], inputs[start + offset]
                result = model.scoring.decide(float(score), heatmap, image, size,
                                              capture=capture_stats[start + offset])
                records.append(EvalRecord(str(sample.path), sample.defect, sample.label, result.normalized_score,
                                          result.heatmap, _mask_for(sample, size, model.params), result.kind))
            progress.advance(task, len(heatmaps))
    metrics = compute_metrics(records)
    if capture:
        with make_progress() as progress:
            task = progress.add_task("scoring under capture variations", total=len(VARIATIONS))
            metrics["capture"] = capture_table(model, samples, advance=lambda: progress.advance(task))
    metrics["model"] = model_identity(model, model_folder)
    metrics["category"] = category or Path(data).resolve().name
    metrics["data"] = str(data)
    if report_dir is not None:
        write_report(report_dir, records, metrics, title=title or f"{model.template} on {metrics['category']}",
                     image_loader=read_image)
    return metrics
