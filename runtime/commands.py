"""Runtime commands (``bench``), registered into the main command by edge_anomaly.cli.

Only the standard library is imported at registration: the parser is built on every call of
``edge-anomaly``, also on an edge box.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_FRAME_SIZE = "1920x1080"
ENGINE_DEVICE_HELP = "where the engine runs: CPU, GPU or NPU (OpenVINO); CUDA (onnxruntime); cuda:N (TensorRT)"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    import resource  # POSIX only, so not imported at registration

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def synthetic_frame(width: int, height: int):
    """A deterministic textured RGB frame: smooth shading plus noise, so resizing does real work."""
    import numpy as np

    rng = np.random.default_rng(0)
    shading = np.linspace(40, 200, width, dtype=np.float32)[None, :, None] + np.zeros((height, 1, 3), np.float32)
    return np.clip(shading + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frame-size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"--frame-size {text!r}: width and height must be positive")
    return width, height


def bench(bundle: str, *, batch: int = 1, threads: int | None = None, backend: str = "auto",
          device: str | None = None, frames: int = 50, warmup: int = 5, frame_size: tuple[int, int] = (1920, 1080),
          image: str | None = None, pipelined: bool = False) -> dict:
    """Latency (per call of ``batch`` frames), throughput and peak memory of a bundle on this machine."""
    import numpy as np

    from runtime.detector import Detector
    from runtime.image_io import read_image
    from runtime.pipeline import Pipeline
    from runtime.sources import Frame

    if batch < 1 or frames < 1 or warmup < 0:
        raise ValueError(f"--batch ({batch}) and --frames ({frames}) must be >= 1, --warmup ({warmup}) >= 0")
    detector = Detector.load(bundle, backend=backend, device=device, threads=threads,
                             performance="throughput" if pipelined else "latency")
    frame = read_image(image) if image else synthetic_frame(*frame_size)
    calls = [frame] * batch
    for _ in range(warmup):
        detector.predict(calls)
    if pipelined:
        stream = (Frame("bench", i, frame) for i in range(frames * batch))
        start = time.perf_counter()
        latencies = [result.latency_ms for _, result in Pipeline(detector).run(stream)]
        elapsed = time.perf_counter() - start
    else:
        latencies = []
        start = time.perf_counter()
        for _ in range(frames):
            began = time.perf_counter()
            detector.predict(calls)
            latencies.append((time.perf_counter() - began) * 1000)
        elapsed = time.perf_counter() - start
    return {
        "bundle": detector.name,
        "engine": f"{detector.bundle.engine.format} {detector.bundle.engine.precision}",
        "backend": detector.backend.name,
        "device": getattr(detector.backend, "device", None),
        "mode": "pipelined" if pipelined else "sequential",
        "batch": batch,
        "threads": threads,
        "frame_size": f"{frame.shape[1]}x{frame.shape[0]}",
        "calls": len(latencies),
        "latency_ms_median": round(float(np.median(latencies)), 3),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3),
        "throughput_fps": round(len(latencies) * (1 if pipelined else batch) / elapsed, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def cmd_bench(args: argparse.Namespace) -> None:
    engine = {"backend": args.backend or "auto", "device": args.engine_device, "threads": args.threads,
              "batch": args.batch or 1}
    target, profile = args.bundle, _device_profile(args.device, args.record)
    if profile is not None:  # the board's engine, device, threads and batch, unless given
        from runtime.bundle import open_bundle

        opened = open_bundle(args.bundle)
        target = opened.folder  # a .tar is unpacked once
        engine = profile.engine_settings(opened.engine.format, args.backend, args.threads, args.batch)
        engine["device"] = args.engine_device or engine["device"]
    figures = bench(target, **engine, frames=args.frames, warmup=args.warmup, frame_size=args.frame_size,
                    image=args.image, pipelined=args.pipelined)
    if args.record:
        from devices.results import format_row, record

        print(f"recorded in {record(profile, format_row(figures, opened.manifest), args.results)}")
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['bundle']}: {figures['engine']} on {figures['backend']} {figures['device'] or ''}, "
          f"{figures['mode']}, batch {figures['batch']}, {figures['frame_size']} frames, {figures['calls']} calls")
    print()
    print("| latency median (ms) | latency p95 (ms) | throughput (frames/s) | peak RSS (MB) |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {figures['latency_ms_median']:.1f} | {figures['latency_ms_p95']:.1f} | {figures['throughput_fps']:.1f} "
          f"| {figures['peak_rss_mb']:.0f} |")


def _device_profile(name: str | None, record: bool):
    """The device profile named by ``--device`` (None without one; ``--record`` needs one)."""
    from devices import load_profile, profile_names

    if name in profile_names():
        return load_profile(name)
    if record:
        raise ValueError("--record needs --device PROFILE (edge-anomaly devices lists them)")
    if name is None:
        return None
    raise ValueError(f"--device {name!r}: not a device profile (known: {', '.join(profile_names())}); "
                     f"an engine device goes to --engine-device, e.g. --engine-device {name}")


def register(subparsers) -> None:
    """Add the runtime's subcommands to ``subparsers``."""
    bench_parser = subparsers.add_parser(
        "bench", help="latency, throughput and memory of a bundle on this machine (no torch needed)",
        description="Times Detector.predict end to end (decoded frame in, result out) on one frame repeated.")
    bench_parser.add_argument("bundle", type=Path, help="bundle folder or .tar")
    bench_parser.add_argument("--batch", type=int, help="frames per predict call (default: the profile's, else 1)")
    bench_parser.add_argument("--threads", type=int,
                              help="engine CPU threads (default: the profile's, else the engine's choice)")
    bench_parser.add_argument("--backend", choices=["auto", "onnxruntime", "openvino", "tensorrt"],
                              help="default: the profile's, else auto")
    bench_parser.add_argument("--device", metavar="PROFILE",
                              help="device profile (edge-anomaly devices): its engine, engine device, threads and "
                                   "batch become the defaults")
    bench_parser.add_argument("--engine-device", metavar="DEVICE", help=ENGINE_DEVICE_HELP)
    bench_parser.add_argument("--frames", type=int, default=50, help="timed calls (default 50)")
    bench_parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    bench_parser.add_argument("--frame-size", type=_frame_size, default=_frame_size(DEFAULT_FRAME_SIZE),
                              metavar="WxH", help=f"synthetic frame size (default {DEFAULT_FRAME_SIZE})")
    bench_parser.add_argument("--image", help="time this image instead of a synthetic frame")
    bench_parser.add_argument("--pipelined", action="store_true",
                              help="stream frames through the pipelined runner (throughput mode)")
    bench_parser.add_argument("--json", action="store_true",
                              help="print one JSON object (latency_ms_median, latency_ms_p95, throughput_fps, "
                                   "peak_rss_mb, ...)")
    bench_parser.add_argument("--record", action="store_true",
                              help="append the figures to the profile's results table (devices/results/PROFILE.md)")
    bench_parser.add_argument("--results", type=Path, metavar="DIR",
                              help="folder of results tables for --record (default: devices/results of the checkout)")
    bench_parser.set_defaults(run=cmd_bench)
