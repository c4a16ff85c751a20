"""Evaluation report: metrics over a labelled test set, written as JSON, Markdown, an ROC plot
and overlays of the worst false-alarm and miss candidates, so a run can be judged at a glance."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from edge_anomaly.evaluation.metrics import aupro, best_f1, f1_at, image_auroc, pixel_auroc
from runtime.visualize import draw_regions, overlay_heatmap

GOOD = "good"


@dataclass
class EvalRecord:
    """One test image as the detector saw it, with its ground truth."""

    path: str
    defect: str  # "good" or the defect folder name
    label: int  # 0 normal, 1 anomalous
    score: float  # normalised image score (0..1, 0.5 = calibrated threshold)
    heatmap: np.ndarray  # float HxW normalised, at the evaluation resolution
    mask: np.ndarray | None  # bool HxW at the same resolution; None: no usable mask
    kind: str | None = None  # what the detector said it found: "local" | "lighting" | "blur" | None


def compute_metrics(records: Sequence[EvalRecord], threshold: float = 0.5) -> dict:
    """Image, pixel and per-defect metrics; undefined values are nan (written to JSON as null).

    Pixel metrics use only records with a mask, so global defects (lighting, blur) without
    one do not count as missed pixels. Per-defect AUROC is each defect against all good
    images, which shows which defect type the detector struggles with.
    """
    labels = np.array([r.label for r in records], dtype=np.int64)
    scores = np.array([r.score for r in records], dtype=np.float64)
    with_mask = [r for r in records if r.mask is not None]
    masks = [r.mask for r in with_mask]
    heatmaps = [r.heatmap for r in with_mask]
    f1, best_threshold = best_f1(labels, scores)
    normal = labels == 0
    defects = np.array([r.defect for r in records])
    per_defect = {}
    for defect in sorted(set(defects[~normal])):
        chosen = normal | (defects == defect)
        mine = scores[defects == defect]
        per_defect[str(defect)] = {
            "image_auroc": image_auroc(labels[chosen], scores[chosen]),
            "n": int(mine.size),
            "recall_calibrated": float(np.mean(mine >= threshold)),
        }
    return {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, heatmaps),
        "pixel_aupro": aupro(masks, heatmaps),
        "image_f1": f1,
        "best_threshold": best_threshold,
        "image_f1_calibrated": f1_at(labels, scores, threshold),
        "threshold": threshold,
        "n_images": len(records),
        "n_anomalous": int(labels.sum()),
        "n_pixel_images": len(with_mask),
        "per_defect": per_defect,
    }


def write_report(
    report_dir: str | Path,
    records: Sequence[EvalRecord],
    metrics: dict,
    *,
    title: str,
    image_loader: Callable[[str], np.ndarray],
    worst: int = 6,
) -> Path:
    """Write metrics.json, metrics.md, roc.png and worst/ overlays into ``report_dir``.

    worst/ holds the ``worst`` highest-scoring good images (fp_NN_<stem>.png, false-alarm
    candidates) and lowest-scoring anomalous ones (fn_NN_<defect>_<stem>.png, miss candidates);
    ``image_loader`` returns the RGB image for a record's path.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    images = [
        {
            "path": str(r.path),
            "defect": r.defect,
            "label": int(r.label),
            "score": float(r.score),
            "kind": r.kind,
        }
        for r in records
    ]
    document = _nan_to_none({**metrics, "images": images})
    (report_dir / "metrics.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    markdown = f"# {title}\n\n{metrics_table(metrics)}\n\n## Per defect\n\n{per_defect_table(metrics)}\n"
    (report_dir / "metrics.md").write_text(markdown)
    _plot_roc(report_dir / "roc.png", records, title)
    _write_worst(report_dir / "worst", records, image_loader, worst)
    return report_dir


def metrics_table(metrics: dict) -> str:
    """The headline metrics as a Markdown table (nan shown as n/a); keys missing are skipped."""
    rows = [
        ("image AUROC", "image_auroc"),
        ("pixel AUROC", "pixel_auroc"),
        ("pixel AUPRO (FPR <= 0.3)", "pixel_aupro"),
        ("image F1 (best threshold)", "image_f1"),
        ("best threshold", "best_threshold"),
        ("image F1 (calibrated threshold)", "image_f1_calibrated"),
        ("calibrated threshold", "threshold"),
        ("images", "n_images"),
        ("anomalous images", "n_anomalous"),
        ("images with masks", "n_pixel_images"),
    ]
    lines = ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {_fmt(metrics[key])} |" for name, key in rows if key in metrics]
    return "\n".join(lines)


def per_defect_table(metrics: dict) -> str:
    lines = ["| defect | n | image AUROC vs good | recall at threshold |", "| --- | ---: | ---: | ---: |"]
    for defect, row in metrics.get("per_defect", {}).items():
        lines.append(
            f"| {defect} | {row['n']} | {_fmt(row['image_auroc'])} | {_fmt(row['recall_calibrated'])} |"
        )
    return "\n".join(lines)


def _plot_roc(path: Path, records: Sequence[EvalRecord], title: str) -> None:
    """Image-level ROC overall, plus one curve per defect (against all good images) if several."""
    labels = np.array([r.label for r in records])
    scores = np.array([r.score for r in records], dtype=np.float64)
    defects = np.array([r.defect for r in records])
    curves = [("all", np.ones(len(records), dtype=bool))]
    anomalous_defects = sorted(set(defects[labels == 1]))
    if len(anomalous_defects) > 1:
        curves += [(d, (labels == 0) | (defects == d)) for d in anomalous_defects]
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    for name, chosen in curves:
        auc = image_auroc(labels[chosen], scores[chosen])
        if math.isnan(auc):
            continue
        fpr, tpr, _ = roc_curve(labels[chosen], scores[chosen])
        axes.plot(fpr, tpr, linewidth=2.0 if name == "all" else 1.0, label=f"{name} (AUROC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1.0)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    axes.set_title(f"{title}: image ROC", fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _write_worst(
    folder: Path, records: Sequence[EvalRecord], image_loader: Callable[[str], np.ndarray], worst: int
) -> None:
    """Overlays of the likeliest false alarms and misses; earlier runs' overlays are removed first
    so the folder never mixes two evaluations."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob("f[pn]_*.png"):
        old.unlink()
    good = sorted((r for r in records if r.label == 0), key=lambda r: r.score, reverse=True)
    missed = sorted((r for r in records if r.label == 1), key=lambda r: r.score)
    for rank, record in enumerate(good[:worst], start=1):
        _write_overlay(folder / f"fp_{rank:02d}_{Path(record.path).stem}.png", record, image_loader)
    for rank, record in enumerate(missed[:worst], start=1):
        name = f"fn_{rank:02d}_{record.defect}_{Path(record.path).stem}.png"
        _write_overlay(folder / name, record, image_loader)


def _write_overlay(path: Path, record: EvalRecord, image_loader: Callable[[str], np.ndarray]) -> None:
    image = image_loader(record.path)
    picture = draw_regions(overlay_heatmap(image, record.heatmap), record.heatmap)
    caption = f"{record.defect} score {record.score:.3f}" + (f" ({record.kind})" if record.kind else "")
    scale = max(0.4, picture.shape[1] / 640)
    origin = (5, 5 + round(20 * scale))
    thickness = max(1, round(scale * 2))
    # Dark outline under light text keeps the caption readable on any heatmap colour.
    for colour, width in (((0, 0, 0), thickness + 2), ((255, 255, 255), thickness)):
        cv2.putText(picture, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _nan_to_none(value: object) -> object:
    """JSON has no NaN; undefined metrics become null."""
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
