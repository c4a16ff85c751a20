"""Verdicts under a real camera: for each category, the defaults fitted, then the line's figures.

For every category (the generated boards and the real ones under ``../shared/data``) a model
is fitted as a new user would (``fit --data DIR``: automatic configuration, or ``--template``)
and evaluated: image and pixel AUROC, false alarms and misses at the calibrated threshold
beside the misses at the strictest threshold that passes every good test image, the kinds
given to flagged defects, and the good test images under each capture variation of
:mod:`edge_anomaly.evaluation.capture` (with the defects under sensor noise).

    python -m bench.capture                                  # boards, bottle, magnetic tile (defaults)
    python -m bench.capture --categories bottle --template patchcore
    python -m bench.capture --set capture_tolerance.copies=0  # the same without the varied copies
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.accuracy import cpu_name
from edge_anomaly.autoconfig.search import fit_as_configured
from edge_anomaly.data.synthetic import generate_boards
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.evaluation.capture import capture_markdown
from edge_anomaly.evaluation.evaluate import evaluate_model

ROOT = Path(__file__).resolve().parents[1]

REAL = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "mtd/magnetic_tile"}


def _overrides(pairs: list[str]) -> list[str]:
    """``capture_tolerance.copies=0`` style keys become the nested mapping ``--set`` takes."""
    out = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if "." in key:
            outer, inner = key.split(".", 1)
            pair = f"{outer}={{{inner}: {value}}}"
        out.append(pair)
    return out


def _category(name: str, data: Path, template: str | None, overrides: list[str]) -> dict:
    started = time.perf_counter()
    model, choice = fit_as_configured(TrainingSet.scan(data), template, overrides=overrides)
    fit_s = time.perf_counter() - started
    metrics = evaluate_model(model, data, capture=True)
    calibration = model.info["calibration"]
    chosen = choice.record()["chosen"] if choice is not None else template
    kinds: dict[str, int] = {}
    for row in metrics["per_defect"].values():
        for kind, count in row["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    print(f"\n## {name}: {chosen}, input {model.input_size[1]}x{model.input_size[0]}, "
          f"{model.info['training_set']['n_images']} training images, fit {fit_s:.0f} s "
          f"(the final fit alone {model.info['fit_seconds']:.0f} s)\n")
    print("| image AUROC | pixel AUROC | false alarms | misses | misses at the strictest threshold | best-F1 threshold "
          "(0.5 = calibrated) | fold-score correction | false-alarm rate promised |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    upper = calibration.get("false_alarm_rate_upper")
    print(f"| {metrics['image_auroc']:.3f} | {metrics['pixel_auroc']:.3f} | {metrics['false_alarm_count']}/"
          f"{metrics['n_good']} | {metrics['miss_count']}/{metrics['n_anomalous']} | "
          f"{metrics['miss_strict_count']}/{metrics['n_anomalous']} | {metrics['best_threshold']:.2f} | "
          f"{model.info.get('training', {}).get('fold_score_correction', '-')} | "
          f"{calibration['estimated_false_alarm_rate'] or 0:.3g} (95 % bound {upper or 0:.3g}, "
          f"{calibration['n_scores']} scores) |")
    print(f"\nflagged defects by kind: {json.dumps(kinds)}\n")
    print(capture_markdown(metrics["capture"]), flush=True)
    return {"category": name, "chosen": chosen, "fit_s": fit_s, "metrics": {
        k: metrics[k] for k in ("image_auroc", "pixel_auroc", "false_alarm_count", "miss_count", "miss_strict_count",
                                "n_good", "n_anomalous", "best_threshold")}, "kinds": kinds,
        "capture": metrics["capture"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", nargs="+", default=["boards", *REAL])
    parser.add_argument("--template", default=None, help="a template instead of automatic configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value hyperparameter")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    setting = args.template or "automatic configuration"
    print(f"# Verdicts under a real camera (CPU: {cpu_name()}, load {os.getloadavg()[0]:.1f}; {setting}"
          f"{', ' + ' '.join(args.overrides) if args.overrides else ''})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as work:
        for name in args.categories:
            if name == "boards":
                data = generate_boards(Path(work) / "boards", n_train=80, n_test_good=20, n_per_defect=10)
            else:
                data = args.data / REAL[name]
                if not (data / "train" / "good").is_dir():
                    print(f"\n## {name}: skipped, {data} not found")
                    continue
            rows.append(_category(name, data, args.template, _overrides(args.overrides)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
