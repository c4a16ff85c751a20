"""Where ``Detector.predict``'s time goes beside the engine call, per bundle and frame size.

    python -m bench.predict BUNDLE [BUNDLE ...] [--threads 2] [--rounds 60] [--image PATH]

For each bundle (folder or .tar) and each frame (the image at the model's input size, at
512 x 512 and at 1920 x 1080), times in interleaved rounds (every bundle and frame once per
round, so a load change on a shared machine hits them all alike):

- the bare engine call on the prepared 1 x H x W x 3 input (``backend.infer``);
- ``Detector.predict`` on the decoded frame, end to end;
- the runtime's own steps, each on its own: ``prepare`` (frame -> model input), ``decide``
  (raw outputs -> verdict at the frame's size), and two parts of ``decide``: the global
  statistics (lighting and blur) and the heatmap's mapping back to the frame.

The overhead is ``prepare + decide`` measured directly, not ``predict - engine``, so the
engine's jitter under load does not land in it. Prints a markdown table (median and minimum
in ms) headed by the CPU, its INT8/BF16 flags and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.cpu import local_cpu
from runtime.detector import Detector
from runtime.global_stats import image_statistics
from runtime.image_io import read_image
from runtime.preprocess import heatmap_to_frame

REPO = Path(__file__).resolve().parents[1]

DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle" / "test" / "good" / "000.png"
FRAME_SIZES = {"input": None, "512": (512, 512), "1080p": (1920, 1080)}


def once_ms(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def steps(detector: Detector, frame: np.ndarray) -> dict:
    """The timed calls for one bundle and frame, by column name."""
    prepared = detector.prepare(frame)
    batch = prepared.input[None]
    heatmaps, scores = detector.infer(batch)
    raw_heatmap, raw_score = heatmaps[0], scores[0]
    scoring = detector.scoring
    calls = {
        "engine": lambda: detector.backend.infer(batch),
        "predict": lambda: detector.predict(frame),
        "prepare": lambda: detector.prepare(frame),
        "decide": lambda: detector.decide(prepared, raw_heatmap, raw_score, 0.0),
        "heatmap to frame": lambda: heatmap_to_frame(raw_heatmap, prepared.frame_hw, prepared.region),
    }
    if scoring.checks_global:
        calls["global stats"] = lambda: image_statistics(prepared.input)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds (each call timed 3 times a round)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the frame's picture")
    args = parser.parse_args()
    image = read_image(args.image)
    load_before = os.getloadavg()
    detectors = {bundle: Detector.load(bundle, threads=args.threads) for bundle in args.bundles}
    cases = {}
    for bundle, detector in detectors.items():
        height, width = detector.input_size
        for name, size in FRAME_SIZES.items():
            frame = cv2.resize(image, size or (width, height), interpolation=cv2.INTER_AREA)
            cases[bundle, name, frame.shape[1], frame.shape[0]] = steps(detector, frame)
    for calls in cases.values():  # warm-up
        for run in calls.values():
            for _ in range(3):
                run()
    times: dict = {key: {column: [] for column in calls} for key, calls in cases.items()}
    for _ in range(args.rounds):
        for key, calls in cases.items():
            for column, run in calls.items():
                times[key][column] += [once_ms(run) for _ in range(3)]
    cpu = local_cpu()
    print(f"CPU {cpu.describe()}; {args.threads} engine threads; {args.rounds} rounds x 3 calls; load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)\n")
    columns = ["engine", "predict", "prepare", "decide", "global stats", "heatmap to frame"]
    print("| bundle | frame | " + " | ".join(f"{c} ms" for c in columns) + " | overhead ms (prepare + decide) |")
    print("| --- | --- |" + " ---: |" * (len(columns) + 1))
    for (bundle, _, width, height), found in times.items():
        cells = [f"{np.median(found[c]):.2f} / {np.min(found[c]):.2f}" if c in found else "-" for c in columns]
        overhead = np.add(found["prepare"], found["decide"])
        print(f"| {bundle.name} | {width}x{height} | " + " | ".join(cells)
              + f" | {np.median(overhead):.2f} / {np.min(overhead):.2f} |")
    print("\ncells: median / minimum")


if __name__ == "__main__":
    main()
