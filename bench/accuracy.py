"""Accuracy, false alarms and misses per category with the defaults, as markdown tables.

    python -m bench.accuracy                                   # boards, bottle, magnetic_tile; automatic configuration
    python -m bench.accuracy --categories bottle --template patchcore --set coreset_ratio=0.05
    python -m bench.accuracy --video bottle                   # also: fit on an mp4 of good parts, judge another
    python -m bench.accuracy --categories boards --logical     # + logical board defects, templates side by side

For every category: ``fit`` as a new user runs it (automatic configuration unless --template),
evaluate on the test set at the calibrated threshold, and time one image through the PyTorch
model (batch 1, after warm-up, 2 threads). The false-alarm rate is the share of test/good
flagged; the miss rate the share of defect images not flagged. Categories whose data is absent
are reported as skipped. ``--logical`` adds the boards' logical defect kinds (swapped, wrong
type, one too many or too few, mirrored parts) and a table of their image AUROC per kind for
each of ``--logical-templates``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edge_anomaly.autoconfig.search import fit_as_configured
from edge_anomaly.data.folders import mvtec_test_set
from edge_anomaly.data.synthetic import LOGICAL_DEFECT_KINDS, generate_boards
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.data.video import write_video
from edge_anomaly.demo import flagged_share
from edge_anomaly.evaluation.evaluate import evaluate_model
from runtime.cpu import local_cpu
from runtime.image_io import list_images, read_image

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"
CATEGORIES = {
    "boards": None,  # generated on the fly
    "bottle": SHARED / "mvtec_ad" / "bottle",
    "magnetic_tile": SHARED / "mtd" / "magnetic_tile",
}


def cpu_name() -> str:
    return f"{local_cpu().describe()}, {os.cpu_count()} cores"


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


def fit_like_the_cli(data: Path, template: str | None, overrides: list[str]):
    """(model, search seconds, total seconds): what ``edge-anomaly fit --data DATA`` does with these flags."""
    started = time.perf_counter()
    model, choice = fit_as_configured(TrainingSet.scan(data), template, overrides=overrides)
    if choice is not None:
        print(f"\n{data.name}: automatic configuration\n\n{choice.table()}\n", flush=True)
    return model, choice.seconds if choice else 0.0, time.perf_counter() - started


def video_row(data: Path, template: str | None, overrides: list[str], work: Path) -> dict:
    """Fit on an mp4 of the good training images, count flags on an mp4 of the good test images."""
    train_video = write_video(work / f"{data.name}-train.mp4",
                              [read_image(p) for p in list_images(data / "train" / "good")], 10.0)
    test_video = write_video(work / f"{data.name}-test.mp4",
                             [read_image(p) for p in list_images(data / "test" / "good")], 10.0)
    model, _, total_s = fit_like_the_cli(train_video, template, overrides)
    flagged, frames = flagged_share(model, test_video)
    return {"category": data.name, "template": model.template, "frames": frames, "flagged": flagged,
            "fit_s": total_s}


def run(category: str, data: Path, template: str | None, overrides: list[str]) -> dict:
    model, search_s, total_s = fit_like_the_cli(data, template, overrides)
    metrics = evaluate_model(model, data)
    median, p95 = single_image_latency_ms(model, data)
    return {
        "category": category,
        "template": model.template,
        "input": model.input_size,
        "search_s": search_s,
        "fit_s": total_s,
        "latency_ms_median": median,
        "latency_ms_p95": p95,
        "calibration": model.info["calibration"],
        "metrics": metrics,
    }


def fmt(value) -> str:
    return "n/a" if value is None or value != value else (f"{value:.3f}" if isinstance(value, float) else str(value))


def rate(metrics: dict, name: str, among: str) -> str:
    """``false_alarm`` / ``miss`` as the share and the count: 0.050 (1/20)."""
    if f"{name}_rate" not in metrics:
        return "n/a"
    return f"{fmt(metrics[f'{name}_rate'])} ({metrics[f'{name}_count']}/{metrics[among]})"


def logical_table(rows: list[dict]) -> str:
    """Image AUROC (logical kind vs good boards) per logical kind, one column per template."""
    lines = ["\nboards: image AUROC per logical defect kind (parts locally perfect, wrong place/count/orientation)\n",
             "| logical defect | " + " | ".join(r["template"] for r in rows) + " |",
             "| --- |" + " ---: |" * len(rows)]
    for kind in LOGICAL_DEFECT_KINDS:
        lines.append(f"| {kind} | " + " | ".join(fmt(r["metrics"]["per_defect"].get(kind, {}).get("image_auroc"))
                                                 for r in rows) + " |")
    return "\n".join(lines)


def print_tables(rows: list[dict], videos: list[dict]) -> None:
    """The accuracy table, each category's per-defect table, and the video cases."""
    print(f"CPU: {cpu_name()}; torch threads 2; {time.strftime('%Y-%m-%d')}\n")
    print("| category | template | input (h x w) | image AUROC | pixel AUROC | AUPRO | false-alarm rate | "
          "miss rate | fit s (of which search) | ms/image median | p95 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        m = r["metrics"]
        print(f"| {r['category']} | {r['template']} | {r['input'][0]} x {r['input'][1]} | {fmt(m['image_auroc'])} | "
              f"{fmt(m['pixel_auroc'])} | {fmt(m['pixel_aupro'])} | {rate(m, 'false_alarm', 'n_good')} | "
              f"{rate(m, 'miss', 'n_anomalous')} | {r['fit_s']:.0f} ({r['search_s']:.0f}) | "
              f"{r['latency_ms_median']:.1f} | "
              f"{r['latency_ms_p95']:.1f} |")
    for r in rows:
        c = r["calibration"]
        print(f"\n{r['category']}: threshold for a false-alarm rate of {c['target_false_alarm_rate']} from "
              f"{c['n_scores']} k-fold normal scores (estimated {fmt(c['estimated_false_alarm_rate'])}); "
              f"per defect at the calibrated threshold:\n")
        print("| defect | n | image AUROC vs good | recall |")
        print("| --- | ---: | ---: | ---: |")
        for defect, d in r["metrics"]["per_defect"].items():
            print(f"| {defect} | {d['n']} | {fmt(d['image_auroc'])} | {fmt(d.get('recall_calibrated'))} |")
    if videos:
        print("\n| video case | template | frames of good test parts | flagged | fit s |")
        print("| --- | --- | ---: | ---: | ---: |")
        for v in videos:
            share = v["flagged"] / max(v["frames"], 1)
            print(f"| {v['category']}: fitted on an mp4 of train/good, judged on an mp4 of test/good | "
                  f"{v['template']} | {v['frames']} | {v['flagged']} ({share:.1%}) | {v['fit_s']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    parser.add_argument("--template", help="fixed template instead of automatic configuration")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--video", nargs="*", default=[], metavar="CATEGORY",
                        help="also the mp4 case for these real categories (their images must share one size)")
    parser.add_argument("--logical", action="store_true",
                        help="boards with the logical defect kinds too, and a table comparing templates on them")
    parser.add_argument("--logical-templates", nargs="+", default=["patchcore", "padim", "student_teacher"])
    parser.add_argument("--boards-test", nargs=2, type=int, default=[20, 10], metavar=("GOOD", "PER_DEFECT"),
                        help="generated boards' test images: good ones, and per defect kind (more narrow the AUROC)")
    parser.add_argument("--json", help="also write all rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows, videos, logical, skipped = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for category in args.categories:
            data = CATEGORIES[category] or generate_boards(Path(tmp) / "boards", logical=args.logical,
                                                        n_test_good=args.boards_test[0],
                                                        n_per_defect=args.boards_test[1])
            if not (data / "train" / "good").is_dir():
                skipped.append(f"{category}: data not found at {data}")
                continue
            rows.append(run(category, data, args.template, args.set))
            if args.logical and CATEGORIES[category] is None:  # the row just fitted serves its own template
                logical += [rows[-1] if template == args.template else run(category, data, template, args.set)
                            for template in args.logical_templates]
            if category in args.video and CATEGORIES[category] is not None:
                videos.append(video_row(data, args.template, args.set, Path(tmp)))

    print_tables(rows, videos)
    if logical:
        print(logical_table(logical))
    for line in skipped:
        print(f"\nskipped {line}")
    if args.json:
        rows_json = {"rows": rows, "videos": videos, "logical": logical}
        Path(args.json).write_text(json.dumps(rows_json, indent=2, default=float))


if __name__ == "__main__":
    main()
