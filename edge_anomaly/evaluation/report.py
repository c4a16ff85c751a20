"""Evaluation report: metrics over a labelled test set, written as JSON, Markdown, an ROC plot,
overlays of the worst false-alarm and miss candidates and one self-contained HTML page, so a
run can be judged at a glance in the line's terms (false alarms and misses, then AUROC)."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from edge_anomaly.evaluation.capture import capture_markdown
from edge_anomaly.evaluation.metrics import aupro, best_f1, f1_at, image_auroc, pixel_auroc
from runtime.image_io import write_image
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

    The line's figures come first: ``false_alarm_rate`` (share of good images flagged at the
    calibrated threshold) and ``miss_rate`` (share of defect images not flagged at it), each
    with its counts, per defect type too. Pixel metrics use only records with a mask, so
    global defects (lighting, blur) without one do not count as missed pixels. Per-defect
    AUROC is each defect against all good images, which shows which defect type the detector
    struggles with; ``kinds`` counts what the detector called the flagged ones.
    """
    labels = np.array([r.label for r in records], dtype=np.int64)
    scores = np.array([r.score for r in records], dtype=np.float64)
    flagged = scores >= threshold
    with_mask = [r for r in records if r.mask is not None]
    masks = [r.mask for r in with_mask]
    heatmaps = [r.heatmap for r in with_mask]
    f1, best_threshold = best_f1(labels, scores)
    normal = labels == 0
    defects = np.array([r.defect for r in records])
    kinds = np.array([r.kind or "" for r in records])
    per_defect = {}
    for defect in sorted(set(defects[~normal])):
        mine = defects == defect
        chosen = normal | mine
        said = kinds[mine & flagged]
        per_defect[str(defect)] = {
            "n": int(mine.sum()),
            **_rate("miss", mine & ~flagged, mine),
            "recall_calibrated": float(np.mean(flagged[mine])),  # 1 - miss_rate, as bench/accuracy.py reads it
            "image_auroc": image_auroc(labels[chosen], scores[chosen]),
            "kinds": {str(kind): int((said == kind).sum()) for kind in sorted(set(said)) if kind},
        }
    return {
        **_rate("false_alarm", normal & flagged, normal),
        **_rate("miss", ~normal & ~flagged, ~normal),
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, heatmaps),
        "pixel_aupro": aupro(masks, heatmaps),
        "image_f1": f1,
        "best_threshold": best_threshold,
        "image_f1_calibrated": f1_at(labels, scores, threshold),
        "threshold": threshold,
        # the strictest threshold that flags no good test image: the misses a calibration cannot beat
        **_rate("miss_strict", ~normal & (scores <= scores[normal].max(initial=-np.inf)), ~normal),
        "n_images": len(records),
        "n_good": int(normal.sum()),
        "n_anomalous": int(labels.sum()),
        "n_pixel_images": len(with_mask),
        "per_defect": per_defect,
    }


def _rate(name: str, hits: np.ndarray, among: np.ndarray) -> dict:
    """``{name}_rate`` (nan when there is nothing to count) and ``{name}_count``."""
    count, total = int(hits.sum()), int(among.sum())
    return {f"{name}_rate": count / total if total else float("nan"), f"{name}_count": count}


def write_report(
    report_dir: str | Path,
    records: Sequence[EvalRecord],
    metrics: dict,
    *,
    title: str,
    image_loader: Callable[[str], np.ndarray],
    worst: int = 6,
) -> Path:
    """Write metrics.json, metrics.md, roc.png, worst/ overlays and report.html into ``report_dir``.

    worst/ holds every false alarm and the ``worst`` good images closest to being one
    (good_NN_<verdict>_<stem>.png, highest score first), and every miss and the ``worst``
    narrowest catches (defect_NN_<verdict>_<defect>_<stem>.png, lowest score first); each shows
    the image with the ground-truth outline beside the heatmap overlay. report.html opens
    offline: tables, the model's identity (``metrics["model"]``) and the ROC embedded, each case
    as an embedded thumbnail linked to its overlay in worst/. ``image_loader`` returns the RGB
    image for a record's path.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    threshold = float(metrics.get("threshold", 0.5))
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
    markdown = (f"# {title}\n\n{metrics_table(metrics)}\n\n## Per defect\n\n{per_defect_table(metrics)}\n"
                + (f"\n## Model\n\n{model_table(metrics['model'])}\n" if metrics.get("model") else ""))
    if "capture" in metrics:
        markdown += f"\n## Under a real camera's variation\n\n{capture_markdown(metrics['capture'])}\n"
    (report_dir / "metrics.md").write_text(markdown)
    _plot_roc(report_dir / "roc.png", records, title, threshold)
    overlays = _write_worst(report_dir / "worst", records, image_loader, worst, threshold)
    html_report(report_dir / "report.html", title, metrics, report_dir / "roc.png", overlays)
    return report_dir


def _share(metrics: dict, name: str, total: str) -> str:
    """``{name}_rate`` and its count as "5.0 % (1 of 20)", or n/a when nothing was counted."""
    value = metrics.get(f"{name}_rate")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f} % ({metrics[f'{name}_count']} of {metrics[total]})"


def metrics_table(metrics: dict) -> str:
    """The headline metrics as a Markdown table, the line's figures first (false alarms and misses
    at the calibrated threshold, then AUROC); nan shown as n/a; keys missing are skipped."""
    lines = ["| metric | value |", "| --- | ---: |"]
    if "false_alarm_rate" in metrics:
        lines.append(f"| false-alarm rate (good flagged) | {_share(metrics, 'false_alarm', 'n_good')} |")
    if "miss_rate" in metrics:
        lines.append(f"| miss rate (defects not flagged) | {_share(metrics, 'miss', 'n_anomalous')} |")
    rows = [
        ("image AUROC", "image_auroc"),
        ("pixel AUROC", "pixel_auroc"),
        ("pixel AUPRO (FPR <= 0.3)", "pixel_aupro"),
        ("image F1 (calibrated threshold)", "image_f1_calibrated"),
        ("image F1 (best threshold)", "image_f1"),
        ("calibrated threshold", "threshold"),
        ("best threshold", "best_threshold"),
        ("images", "n_images"),
        ("good images", "n_good"),
        ("anomalous images", "n_anomalous"),
        ("images with masks", "n_pixel_images"),
    ]
    lines += [f"| {name} | {_fmt(metrics[key])} |" for name, key in rows if key in metrics]
    if "miss_strict_rate" in metrics:
        lines.append(f"| miss rate at the strictest threshold passing every good image | "
                     f"{_share(metrics, 'miss_strict', 'n_anomalous')} |")
    return "\n".join(lines)


def per_defect_table(metrics: dict) -> str:
    lines = ["| defect | n | miss rate | image AUROC vs good | flagged as |", "| --- | ---: | ---: | ---: | --- |"]
    for defect, row in metrics.get("per_defect", {}).items():
        kinds = ", ".join(f"{kind} {count}" for kind, count in row.get("kinds", {}).items()) or "-"
        miss = _share(row, "miss", "n")
        lines.append(f"| {defect} | {row['n']} | {miss} | {_fmt(row['image_auroc'])} | {kinds} |")
    return "\n".join(lines)


def model_table(model: dict) -> str:
    """Which model the report is about (evaluate.model_identity), as a Markdown table."""
    height, width = model.get("input_size") or (None, None)
    rows = [("template", model.get("template")),
            ("input size", f"{width}x{height}" if width else None),
            ("training images", model.get("training_images")),
            ("raw threshold", _fmt(model["raw_threshold"]) if model.get("raw_threshold") is not None else None),
            ("model.json SHA-256", model.get("hash")),
            ("created", model.get("created")),
            ("folder", model.get("folder"))]
    return "\n".join(["| model | |", "| --- | --- |"]
                     + [f"| {name} | {'n/a' if value is None else value} |" for name, value in rows])


_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _plot_roc(path: Path, records: Sequence[EvalRecord], title: str, threshold: float) -> None:
    """Image-level ROC overall, plus one curve per defect (against all good images) if several.

    The false-positive axis is logarithmic, with a false-positive rate of 0 drawn at half of one
    good image's share (labelled 0), so curves that all reach 1.0 at a tiny false-positive rate
    stay apart; each curve has its own line style and marks its operating point at the
    calibrated threshold.
    """
    labels = np.array([r.label for r in records])
    scores = np.array([r.score for r in records], dtype=np.float64)
    defects = np.array([r.defect for r in records])
    curves = [("all defects", np.ones(len(records), dtype=bool))]
    anomalous_defects = sorted(set(defects[labels == 1]))
    if len(anomalous_defects) > 1:
        curves += [(d, (labels == 0) | (defects == d)) for d in anomalous_defects]
    zero = 0.5 / max(int((labels == 0).sum()), 1)  # where FPR 0 sits on the log axis
    figure = Figure(figsize=(7, 5), dpi=110)
    axes = figure.add_subplot()
    for index, (name, chosen) in enumerate(curves):
        auc = image_auroc(labels[chosen], scores[chosen])
        if math.isnan(auc):
            continue
        fpr, tpr, _ = roc_curve(labels[chosen], scores[chosen])
        flagged = scores[chosen] >= threshold
        truth = labels[chosen] == 1
        point = (float(flagged[~truth].mean()), float(flagged[truth].mean()))
        line, = axes.plot(np.maximum(fpr, zero), tpr, linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                          linewidth=2.5 if index == 0 else 1.5, drawstyle="steps-post",
                          label=f"{name}: AUROC {auc:.3f}")
        axes.plot(max(point[0], zero), point[1], marker=_MARKERS[index % len(_MARKERS)], markersize=8,
                  color=line.get_color(), markeredgecolor="black", linestyle="none")
    axes.plot([], [], marker="o", color="white", markeredgecolor="black", linestyle="none",
              label="marker: calibrated threshold")
    axes.set_xscale("log")
    ticks = [zero, *(t for t in (0.01, 0.03, 0.1, 0.3) if t > 1.5 * zero), 1.0]
    axes.set_xticks(ticks, ["0", *(f"{100 * t:g} %" for t in ticks[1:])])
    axes.minorticks_off()
    axes.set(xlim=(zero * 0.8, 1.05), ylim=(-0.01, 1.02), ylabel="true-positive rate (defect images caught)",
             xlabel="false-positive rate (good images flagged), log scale")
    axes.grid(True, alpha=0.3)
    axes.set_title(f"{title}: image ROC", fontsize=11)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)


def _write_worst(
    folder: Path, records: Sequence[EvalRecord], image_loader: Callable[[str], np.ndarray], worst: int,
    threshold: float,
) -> list[tuple[Path, str, str]]:
    """Overlays of every false alarm and miss, then the ``worst`` good images and defects closest to
    one, each named and captioned by its verdict; earlier runs' overlays are removed first so the
    folder never mixes two evaluations. Returns (path, caption, verdict) triples."""
    folder.mkdir(exist_ok=True)
    for old in [*folder.glob("f[pn]_*.png"), *folder.glob("good_*.png"), *folder.glob("defect_*.png")]:
        old.unlink()
    good = sorted((r for r in records if r.label == 0), key=lambda r: r.score, reverse=True)
    defect = sorted((r for r in records if r.label == 1), key=lambda r: r.score)
    false_alarms = sum(r.score >= threshold for r in good)
    misses = sum(r.score < threshold for r in defect)
    written = []
    for rank, record in enumerate(good[:false_alarms + worst], start=1):
        verdict = "false_alarm" if record.score >= threshold else "passed"
        path = folder / f"good_{rank:02d}_{verdict}_{Path(record.path).stem}.png"
        written.append((path, _write_overlay(path, record, image_loader, verdict, threshold), verdict))
    for rank, record in enumerate(defect[:misses + worst], start=1):
        verdict = "caught" if record.score >= threshold else "missed"
        path = folder / f"defect_{rank:02d}_{verdict}_{record.defect}_{Path(record.path).stem}.png"
        written.append((path, _write_overlay(path, record, image_loader, verdict, threshold), verdict))
    return written


_MIN_PANEL_WIDTH = 320  # small images are enlarged so the caption stays legible
_BANNER_RGB = (32, 32, 32)
_TRUTH_RGB = (0, 255, 255)  # the ground-truth outline: cyan, apart from the detector's white regions
THUMBNAIL_WIDTH = 360
_VERDICT_RGB = {"false_alarm": (255, 90, 90), "missed": (255, 90, 90), "passed": (120, 220, 120),
                "caught": (120, 220, 120)}


def _write_overlay(path: Path, record: EvalRecord, image_loader: Callable[[str], np.ndarray], verdict: str,
                   threshold: float) -> str:
    """The image with its ground-truth outline (cyan) beside the heatmap overlay with the detector's
    regions (white) and the same outline, under one caption banner; returns the caption."""
    image = image_loader(record.path)
    scale = max(1.0, _MIN_PANEL_WIDTH / image.shape[1])
    if scale > 1.0:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_NEAREST)
    overlay = draw_regions(overlay_heatmap(image, record.heatmap), record.heatmap)
    picture = np.hstack([_outline_truth(image, record.mask), _outline_truth(overlay, record.mask)])
    relation = ">=" if record.score >= threshold else "<"
    kind = f", kind {record.kind}" if record.kind else ""
    caption = (f"{verdict.replace('_', ' ').upper()}: {record.defect}, score {record.score:.3f} {relation} "
               f"{threshold:.2f}{kind}")
    font_scale = picture.shape[1] / 1100
    thickness = max(1, round(font_scale * 2))
    (_, text_h), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    banner = np.full((text_h + baseline + 12, picture.shape[1], 3), _BANNER_RGB, np.uint8)
    cv2.putText(banner, caption, (8, text_h + 6), cv2.FONT_HERSHEY_SIMPLEX, font_scale, _VERDICT_RGB[verdict],
                thickness, cv2.LINE_AA)
    write_image(path, np.vstack([banner, picture]))
    return caption


def _outline_truth(image_rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A copy of the image with the outline of the defect's ground-truth mask (resized to the image)."""
    if mask is None or not mask.any():
        return image_rgb
    binary = cv2.resize(mask.astype(np.uint8), image_rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(image_rgb.shape[:2]) / 200))
    return cv2.drawContours(image_rgb.copy(), contours, -1, _TRUTH_RGB, thickness)


def _html_table(markdown: str) -> str:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if not line.startswith("| ---")]
    head = "".join(f"<th>{html.escape(cell.strip())}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell.strip())}</td>" for cell in row) + "</tr>"
                   for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _embedded_png(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _thumbnail(png: Path, caption: str, page_folder: Path) -> str:
    """An embedded JPEG thumbnail of an overlay, linked to the full picture (relative to the page)."""
    picture = cv2.imread(str(png), cv2.IMREAD_COLOR)
    height = round(picture.shape[0] * THUMBNAIL_WIDTH / picture.shape[1])
    small = cv2.resize(picture, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA)
    data = base64.b64encode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()).decode()
    link = html.escape(png.relative_to(page_folder).as_posix())
    return (f'<figure><a href="{link}"><img src="data:image/jpeg;base64,{data}" alt="{html.escape(caption)}">'
            f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")


def html_report(path: Path, title: str, metrics: dict, roc_png: Path,
                overlays: Sequence[tuple[Path, str, str]]) -> Path:
    """One HTML file that opens offline: the metrics and model tables and the ROC embedded, each case
    an embedded JPEG thumbnail linked to its full overlay (beside the page, in worst/), inline styles only."""
    def figures(verdict: str) -> str:
        return ("".join(_thumbnail(png, caption, path.parent) for png, caption, said in overlays if said == verdict)
                or "<p>none</p>")

    def count(verdict: str) -> int:
        return sum(said == verdict for _, _, said in overlays)

    model = f"<h2>Model</h2>{_html_table(model_table(metrics['model']))}" if metrics.get("model") else ""

    capture_section = ""
    if "capture" in metrics:
        markdown, _, misses = capture_markdown(metrics["capture"]).partition("\n\n")
        capture_section = (f"<h2>Good parts under a real camera's variation</h2>{_html_table(markdown)}"
                           f"<p>{html.escape(misses)}</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; }} td:not(:first-child) {{ text-align: right; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
img {{ max-width: 100%; }} figure img {{ width: {THUMBNAIL_WIDTH}px; }}
figcaption {{ font-size: 0.8em; color: #555; max-width: {THUMBNAIL_WIDTH}px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Verdicts at the calibrated threshold</h2>{_html_table(metrics_table(metrics))}
<h2>Per defect</h2>{_html_table(per_defect_table(metrics))}
{capture_section}{model}
<h2>Image ROC</h2>{_embedded_png(roc_png, "image ROC")}
<p>Each case: the image with the ground-truth outline (cyan) beside the heatmap, tinted where it nears the
threshold, with the detector's regions (white). Click a thumbnail for the full picture.</p>
<h2>False alarms ({count("false_alarm")})</h2>{figures("false_alarm")}
<h2>Misses ({count("missed")})</h2>{figures("missed")}
<h2>Good images closest to a false alarm</h2>{figures("passed")}
<h2>Narrowest catches</h2>{figures("caught")}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


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
