"""Several cameras on one bundle: frames per second and p95 latency, each camera alone on the engine or batched.

    python -m bench.cameras BUNDLE [--cameras 1 2 4] [--seconds 6] [--repeats 3] [--max-wait-ms 4]
                            [--threads 2] [--performance latency throughput]

Each camera is a thread feeding real frames (the bottle test images, each camera starting at
another one) through ``Detector.predict`` on one shared Detector as fast as it can, like a
continuous camera of the station. "off": every camera calls the engine on its own (OpenVINO
gives each thread its own infer request); "on": the calls go through
:class:`runtime.batching.BatchingBackend` (one round per stream of the engine). The station's
``batching: off`` is "latency, off"; ``auto`` is "throughput, on" from 2 cameras. Runs are
interleaved (every camera count, mode and performance hint once per repeat), so a load change
on a shared machine hits them alike; a cell is the median over repeats of the frames per second
(all cameras together) and of the p95 latency of one frame (``predict``, batching's wait
included), with the mean images per engine call. Prints the CPU and the load average before
and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from runtime.batching import BatchingBackend
from runtime.cpu import local_cpu
from runtime.detector import Detector
from runtime.image_io import list_images, read_image

REPO = Path(__file__).resolve().parents[1]

DEFAULT_FRAMES = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle" / "test"


def run_cameras(detector: Detector, frames: list[np.ndarray], cameras: int, seconds: float) -> tuple[float, float]:
    """(frames per second of all cameras together, p95 latency ms of one frame) over ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(cameras)]
    stop = time.monotonic() + seconds

    def camera(index: int) -> None:
        frame_number = index * len(frames) // cameras
        while time.monotonic() < stop:
            start = time.perf_counter()
            detector.predict(frames[frame_number % len(frames)])
            latencies[index].append((time.perf_counter() - start) * 1000)
            frame_number += 1

    threads = [threading.Thread(target=camera, args=(index,)) for index in range(cameras)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    every = np.concatenate([np.asarray(values) for values in latencies])
    return len(every) / elapsed, float(np.percentile(every, 95))


def measure(args: argparse.Namespace, frames: list[np.ndarray]) -> dict:
    """{(performance, cameras, mode): [(fps, p95, images per call), ...]} over the repeats, interleaved."""
    detectors = {hint: Detector.load(args.bundle, threads=args.threads, performance=hint)
                 for hint in args.performance}
    cells: dict = {}
    for _ in range(args.repeats):
        for hint, detector in detectors.items():
            plain = detector.backend
            for cameras in args.cameras:
                for mode in ("off", "on"):
                    batcher = BatchingBackend(plain, args.max_wait_ms) if mode == "on" else None
                    detector.backend = batcher or plain
                    run_cameras(detector, frames, cameras, min(1.0, args.seconds))  # warm-up
                    if batcher is not None:
                        batcher.rounds = batcher.images = 0
                    fps, p95 = run_cameras(detector, frames, cameras, args.seconds)
                    per_call = batcher.images / batcher.rounds if batcher is not None and batcher.rounds else 1.0
                    cells.setdefault((hint, cameras, mode), []).append((fps, p95, per_call))
                    print(f"  {hint} {cameras} camera(s) batching {mode}: {fps:.1f} frames/s, p95 {p95:.1f} ms, "
                          f"{per_call:.2f} images/call, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            detector.backend = plain
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of real frames (recursive)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-wait-ms", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--performance", nargs="+", default=["latency"], choices=["latency", "throughput"])
    parser.add_argument("--max-frames", type=int, default=24, help="frames held in memory, cycled through")
    args = parser.parse_args()
    paths = sorted(list_images(args.frames, recursive=True))[::7][:args.max_frames]
    frames = [read_image(path) for path in paths]
    load_before = os.getloadavg()
    cells = measure(args, frames)
    cpu = local_cpu()
    print(f"CPU {cpu.describe()}; {os.cpu_count()} cores; {args.threads} engine threads; {len(frames)} frames "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}; {args.seconds:g} s per run, median of {args.repeats} "
          f"interleaved repeats; max wait {args.max_wait_ms:g} ms; load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (1 min)\n")
    print("| hint | cameras | frames/s off | frames/s on | p95 ms off | p95 ms on | images/call on |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for hint in args.performance:
        for cameras in args.cameras:
            off, on = cells[hint, cameras, "off"], cells[hint, cameras, "on"]
            print(f"| {hint} | {cameras} | {statistics.median(r[0] for r in off):.1f} | "
                  f"{statistics.median(r[0] for r in on):.1f} | {statistics.median(r[1] for r in off):.0f} | "
                  f"{statistics.median(r[1] for r in on):.0f} | {statistics.median(r[2] for r in on):.2f} |")


if __name__ == "__main__":
    main()
