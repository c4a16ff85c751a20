"""The runtime's measurement behind ``edge-anomaly bench`` (registered by devices.commands, which adds a
device profile's defaults and ``--record``): latency, throughput and peak memory of a bundle.

Only the standard library and the engine table (runtime.backends, no engine) are imported at module
level: the parser is built on every call of ``edge-anomaly``, also on an edge box. The shared engine
flags (``add_engine_arguments``) serve ``predict`` and ``bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from runtime.backends import BACKENDS, ENGINE_DEVICE_HELP

DEFAULT_FRAME_SIZE = "1920x1080"


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


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` for --frame-size."""
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


def add_engine_arguments(parser: argparse.ArgumentParser, backend_default: str | None, backend_help: str,
                         threads_default: str) -> None:
    """``--backend``, ``--engine-device`` and ``--threads``: which engine runs a bundle, where, on how many threads."""
    parser.add_argument("--backend", default=backend_default, choices=("auto", *BACKENDS), help=backend_help)
    parser.add_argument("--engine-device", metavar="DEVICE", help=ENGINE_DEVICE_HELP)
    parser.add_argument("--threads", type=int, help=f"engine CPU threads (default: {threads_default})")


def print_figures(figures: dict, as_json: bool = False) -> None:
    """:func:`bench`'s figures as one JSON object, or a line naming the run and a Markdown table."""
    if as_json:
        print(json.dumps(figures))
        return
    print(f"{figures['bundle']}: {figures['engine']} on {figures['backend']} {figures['device'] or ''}, "
          f"{figures['mode']}, batch {figures['batch']}, {figures['frame_size']} frames, {figures['calls']} calls")
    print()
    print("| latency median (ms) | latency p95 (ms) | throughput (frames/s) | peak RSS (MB) |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {figures['latency_ms_median']:.1f} | {figures['latency_ms_p95']:.1f} | {figures['throughput_fps']:.1f} "
          f"| {figures['peak_rss_mb']:.0f} |")
