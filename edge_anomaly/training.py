"""Fitting a template on a folder of normal images, then calibrating its threshold.

A share of the normal images is held out: the model never sees them while fitting, and
their scores set the threshold and normalisation (or, given defect examples, the F1-optimal
threshold is used instead). The lighting and blur checks are calibrated the same way.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from edge_anomaly.backbones import build_extractor
from edge_anomaly.calibration import f1_scale, quantile_scale
from edge_anomaly.data.folders import load_inputs, require_images, training_folder
from edge_anomaly.graph import AnomalyGraph
from edge_anomaly.model import TrainedModel, run_graph
from edge_anomaly.progress import make_progress
from edge_anomaly.templates import TemplateParams, get_template
from runtime.global_stats import GlobalStatsReference, image_statistics
from runtime.image_io import IMAGE_SUFFIXES, list_images
from runtime.scoring import Scoring

MIN_TRAINING_IMAGES = 6


def fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the names and contents of the training images, order-independent."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def split_holdout(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): at least 3 held out and 3 to fit."""
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(3, round(count * fraction)), count - 3)
    return np.sort(order[held:]), np.sort(order[:held])


def _read_folder(folder: Path, size: tuple[int, int], progress, label: str) -> tuple[np.ndarray, list[Path]]:
    paths = list_images(folder, recursive=True)
    if not paths:
        raise ValueError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    task = progress.add_task(label, total=len(paths))
    return load_inputs(paths, size, lambda: progress.advance(task))


def _fit_on_embeddings(scorer, extractor, images: np.ndarray, batch_size: int, progress, template_name: str) -> None:
    """Embed the fitting images with the frozen backbone, then fit the scorer on the embeddings."""
    task = progress.add_task("extracting features", total=len(images))
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size])
            embeddings.append(scorer.embed(extractor(batch.permute(0, 3, 1, 2).float() / 255.0)))
            progress.advance(task, len(batch))
        embeddings = torch.cat(embeddings)
        task = progress.add_task(f"fitting {template_name}", total=None)
        scorer.progress = lambda done, total: progress.update(task, completed=done, total=total)
        scorer.fit(embeddings)
        scorer.progress = None


def fit_model(data: str | Path, template_name: str, params: TemplateParams,
              defects: str | Path | None = None) -> TrainedModel:
    """Fit ``template_name`` on the normal images under ``data`` and calibrate it."""
    template = get_template(template_name)
    folder = training_folder(data)
    started = time.perf_counter()
    with make_progress() as progress:
        images, paths = _read_folder(folder, params.input_size, progress, "reading images")
        require_images(folder, len(paths), MIN_TRAINING_IMAGES)
        fit_idx, held_idx = split_holdout(len(paths), params.holdout_fraction, params.seed)

        extractor = build_extractor(params.backbone, params.layers, params.input_size, params.backbone_weights)
        scorer = template.scorer(params, extractor.feature_shapes(params.input_size))
        graph = AnomalyGraph(extractor, scorer, params.input_size, params.heatmap_sigma).eval()
        if scorer.fits_on_images:  # trained by gradient descent on the images themselves
            scorer.fit_images(images[fit_idx], extractor, progress)
        else:
            _fit_on_embeddings(scorer, extractor, images[fit_idx], params.batch_size, progress, template_name)
        fit_seconds = time.perf_counter() - started

        task = progress.add_task("calibrating threshold", total=len(held_idx))
        held_scores = run_graph(graph, images[held_idx], params.batch_size)[1]
        progress.advance(task, len(held_idx))
        if defects is not None:
            defect_images, _ = _read_folder(Path(defects), params.input_size, progress, "reading defect examples")
            local = f1_scale(held_scores, run_graph(graph, defect_images, params.batch_size)[1])
        else:
            local = quantile_scale(held_scores, params.threshold_quantile, params.threshold_margin)

    scoring = Scoring(local=local)
    if params.global_checks:
        # Whole-image statistics are cheap and unbiased enough in-sample, so every training
        # image (not only the held-out few) calibrates their thresholds: a steadier tail.
        stats = np.stack([image_statistics(x) for x in images])
        reference = GlobalStatsReference.fit(stats[fit_idx])
        lighting, blur = reference.deviation_scores(stats)
        scoring = Scoring(local=local, reference=reference,
                          lighting=quantile_scale(lighting, params.threshold_quantile, params.global_check_margin),
                          blur=quantile_scale(blur, params.threshold_quantile, params.global_check_margin))
    info = {
        "training_set": {
            "folder": str(folder),
            "n_images": len(paths),
            "n_fit": len(fit_idx),
            "n_holdout": len(held_idx),
            "fingerprint": fingerprint(paths),
        },
        "threshold_mode": "f1" if defects is not None else "quantile",
        "holdout_scores": {"min": float(held_scores.min()), "median": float(np.median(held_scores)),
                           "max": float(held_scores.max())},
        "fit_seconds": round(fit_seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return TrainedModel(template_name, params, graph, scoring, info)
