"""Does the verdict name the right kind of fault? A table per dataset: for each defect folder,
how many images, how many flagged, the share of flagged ones labelled with their true kind,
and what the wrong ones were labelled.

PatchCore is fitted with the defaults (``load_params`` + ``fit_model``) on:

* the generated boards (``generate_boards``): local kinds must come out ``local``, the
  lighting kinds ``lighting`` and the blur kind ``blur``;
* the real categories under ``../shared/data`` (MVTec bottle, magnetic tile), where every
  defect is expected ``local`` (magnetic tile's ``uneven`` spreads over much of the tile, so
  a frame-wide kind there is arguable).

Kinds must not depend on one calibration: every table is repeated with the local threshold
moved down and up (``--factors``: the threshold becomes median + f * (threshold - median) of
the good test scores), which is what a different calibration does.

    python -m bench.kinds                       # boards, bottle, magnetic tile (about 15 min on 2 cores)
    python -m bench.kinds --skip-real --per-kind 20
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.accuracy import cpu_name
from edge_anomaly.config import load_params
from edge_anomaly.data.folders import load_inputs_with_capture, mvtec_test_set
from edge_anomaly.data.synthetic import DEFECT_KINDS, generate_boards
from edge_anomaly.training import fit_model
from runtime.image_io import list_images
from runtime.scoring import ScoreScale, Scoring

ROOT = Path(__file__).resolve().parents[1]

REAL = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "mtd/magnetic_tile"}


def _subsampled(data: Path, max_train: int, work: Path) -> Path:
    """``data`` itself, or a copy of its layout whose train/good holds ``max_train`` images spread
    evenly over the sorted list (symlinks, nothing copied)."""
    train = list_images(data / "train" / "good")
    if len(train) <= max_train:
        return data
    root = work / data.name
    (root / "train" / "good").mkdir(parents=True)
    for index in np.unique(np.linspace(0, len(train) - 1, max_train).round().astype(int)):
        path = train[index]
        (root / "train" / "good" / path.name).symlink_to(path.resolve())
    for part in ("test", "ground_truth"):
        if (data / part).exists():
            (root / part).symlink_to((data / part).resolve())
    return root


def _outputs(data: Path) -> tuple[Scoring, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(scoring, raw heatmaps, raw scores, inputs, defect names, fit info) of a default PatchCore."""
    template, params = load_params("patchcore")
    started = time.perf_counter()
    model = fit_model(data, template, params)
    fit_s = time.perf_counter() - started
    samples = mvtec_test_set(data)
    inputs, capture, kept = load_inputs_with_capture([s.path for s in samples], model.input_size, lambda: None)
    defect_of = {s.path: s.defect for s in samples}
    heatmaps, scores = model.infer(inputs)
    info = {"fit_s": fit_s, "n_train": model.info["training_set"]["n_images"]}
    return model.scoring, heatmaps, scores, inputs, capture, np.array([defect_of[p] for p in kept]), info


def _table(scoring: Scoring, heatmaps, scores, inputs, capture, defects,
           expected: dict[str, str]) -> tuple[str, dict]:
    """Markdown rows per defect folder and {folder: (right, flagged)}."""
    said: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for heatmap, score, image, stats, defect in zip(heatmaps, scores, inputs, capture, defects, strict=True):
        said[str(defect)][scoring.decide(float(score), heatmap, image, image.shape[:2], capture=stats).kind] += 1
    lines = ["| defect | expected | n | flagged | labelled right (of flagged) | wrong ones labelled |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    shares = {}
    for defect in sorted(said, key=lambda d: (d != "good", expected.get(d, ""), d)):
        counts = said[defect]
        flagged = sum(n for kind, n in counts.items() if kind)
        if defect == "good":
            lines.append(f"| good | normal | {sum(counts.values())} | {flagged} | - | "
                         f"{', '.join(f'{k} {n}' for k, n in counts.items() if k) or '-'} |")
            continue
        want = expected[defect]
        right = counts[want]
        wrong = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=str) if kind and kind != want)
        share = f"{100 * right / flagged:.1f} % ({right}/{flagged})" if flagged else "n/a"
        lines.append(f"| {defect} | {want} | {sum(counts.values())} | {flagged} | {share} | {wrong or '-'} |")
        shares[defect] = (right, flagged)
    return "\n".join(lines), shares


def _report(name: str, outputs, expected: dict[str, str], factors: list[float]) -> None:
    scoring, heatmaps, scores, inputs, capture, defects, info = outputs
    median = float(np.median(scores[defects == "good"]))
    print(f"\n## {name} (PatchCore defaults, {info['n_train']} training images, fit {info['fit_s']:.0f} s)\n")
    for factor in factors:
        threshold = median + factor * (scoring.local.threshold - median)
        moved = scoring.model_copy(update={"local": ScoreScale(threshold=threshold, spread=scoring.local.spread)})
        table, shares = _table(moved, heatmaps, scores, inputs, capture, defects, expected)
        label = "calibrated threshold" if factor == 1.0 else f"threshold moved, factor {factor:g}"
        right = sum(r for r, _ in shares.values())
        flagged = sum(f for _, f in shares.values())
        print(f"### {label} (raw {threshold:.3f})\n\n{table}\n")
        print(f"all defects: {100 * right / max(flagged, 1):.1f} % of {flagged} flagged labelled right\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=40, help="generated boards per defect kind")
    parser.add_argument("--max-train", type=int, default=200,
                        help="real categories: fit on at most this many training images (spread evenly)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.6, 1.5])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    print(f"# Kinds (CPU: {cpu_name()}, load {os.getloadavg()[0]:.1f})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-kinds-") as work:
        boards = generate_boards(Path(work) / "boards", n_train=80, n_test_good=20, n_per_defect=args.per_kind)
        _report("generated boards", _outputs(boards), DEFECT_KINDS, args.factors)
        if args.skip_real:
            return
        for name, relative in REAL.items():
            data = args.data / relative
            if not (data / "train" / "good").is_dir():
                print(f"\n## {name}: skipped, {data} not found")
                continue
            outputs = _outputs(_subsampled(data, args.max_train, Path(work)))
            _report(name, outputs, collections.defaultdict(lambda: "local"), args.factors)


if __name__ == "__main__":
    main()
