"""Accuracy and training speed per category and template, as markdown tables.

    python bench/accuracy.py                                  # synthetic boards, bottle, magnetic_tile
    python bench/accuracy.py --categories bottle --templates patchcore --set coreset_ratio=0.05
    python bench/accuracy.py --categories boards --logical --templates patchcore padim student_teacher

For every (category, template): fit with default hyperparameters (plus any --set), evaluate on
the test set, and time a single 256 px image through the PyTorch model (batch 1, after
warm-up, 2 threads). Categories whose data is absent are reported as skipped. ``--logical`` adds
the boards' logical defect kinds (swapped, wrong type, one too many or too few, mirrored parts)
and a table of their image AUROC per kind with the templates side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_anomaly.config import load_params  # noqa: E402
from edge_anomaly.data.folders import mvtec_test_set  # noqa: E402
from edge_anomaly.data.synthetic import LOGICAL_DEFECT_KINDS, generate_boards  # noqa: E402
from edge_anomaly.evaluation.evaluate import evaluate_model  # noqa: E402
from edge_anomaly.training import fit_model  # noqa: E402
from runtime.image_io import read_image  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
CATEGORIES = {
    "boards": None,  # generated on the fly
    "bottle": SHARED / "mvtec_ad" / "bottle",
    "magnetic_tile": SHARED / "mtd" / "magnetic_tile",
}


def single_image_latency_ms(model, data: Path, repeats: int = 20) -> tuple[float, float]:
    """(median, p95) milliseconds for predict() on one decoded test image at a time."""
    frames = [read_image(s.path) for s in mvtec_test_set(data)[:repeats]]
    model.predict(frames[:1])
    times = []
    for frame in frames:
        start = time.perf_counter()
        model.predict([frame])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def run(category: str, data: Path, template: str, overrides: list[str]) -> dict:
    name, params = load_params(template, overrides=overrides)
    model = fit_model(data, name, params)
    metrics = evaluate_model(model, data)
    median, p95 = single_image_latency_ms(model, data)
    bank = getattr(model.graph.scorer, "memory_bank", None)
    return {
        "category": category,
        "template": template,
        "fit_s": model.info["fit_seconds"],
        "latency_ms_median": median,
        "latency_ms_p95": p95,
        "bank": None if bank is None else int(bank.shape[0]),
        **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1", "image_f1_calibrated")},
        "per_defect": metrics["per_defect"],
    }


def fmt(value) -> str:
    return "n/a" if value is None or value != value else (f"{value:.3f}" if isinstance(value, float) else str(value))


def logical_table(rows: list[dict]) -> str:
    """Image AUROC (logical kind vs good boards) per logical kind, one column per template."""
    lines = ["\nboards: image AUROC per logical defect kind (parts locally perfect, wrong place/count/orientation)\n",
             "| logical defect | " + " | ".join(r["template"] for r in rows) + " |",
             "| --- |" + " ---: |" * len(rows)]
    for kind in LOGICAL_DEFECT_KINDS:
        lines.append(f"| {kind} | " + " | ".join(fmt(r["per_defect"].get(kind, {}).get("image_auroc")) for r in rows)
                     + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    parser.add_argument("--templates", nargs="+", default=["patchcore", "padim"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write all rows to this JSON file")
    parser.add_argument("--logical", action="store_true",
                        help="boards with the logical defect kinds too, and a table comparing templates on them")
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for category in args.categories:
            data = CATEGORIES[category] or generate_boards(Path(tmp) / "boards", logical=args.logical)
            if not (data / "train" / "good").is_dir():
                skipped.append(f"{category}: data not found at {data}")
                continue
            for template in args.templates:
                rows.append(run(category, data, template, args.set))

    print("| category | template | image AUROC | pixel AUROC | AUPRO | F1 best | F1 calibrated | fit s | "
          "ms/image median | p95 | bank |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['category']} | {r['template']} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | "
              f"{fmt(r['pixel_aupro'])} | {fmt(r['image_f1'])} | {fmt(r['image_f1_calibrated'])} | "
              f"{r['fit_s']:.1f} | {r['latency_ms_median']:.1f} | {r['latency_ms_p95']:.1f} | {fmt(r['bank'])} |")
    for r in rows:
        print(f"\n{r['category']} / {r['template']}: image AUROC and recall at the calibrated threshold per defect\n")
        print("| defect | n | image AUROC vs good | recall |")
        print("| --- | ---: | ---: | ---: |")
        for defect, d in r["per_defect"].items():
            print(f"| {defect} | {d['n']} | {fmt(d['image_auroc'])} | {fmt(d['recall_calibrated'])} |")
    if args.logical:
        print(logical_table([r for r in rows if r["category"] == "boards"]))
    for line in skipped:
        print(f"\nskipped {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
