"""This machine's PyTorch speed in milliseconds per counted GFLOP, kept between runs.

The search orders candidates by counted operations, which no load can change, but its
``est. ms/image`` column and ``--max-latency-ms`` need milliseconds. One timing per search (the
fastest of a few calls of the first candidate) reads 100x high on a machine busy with other work.
So the fastest rate ever measured here, for this CPU, thread count and torch version, is kept in
a small JSON file, and a search uses the faster of it and its own timing: after one run on a
quiet machine, the estimates are the machine's own, however loaded it is later.

The file lives in ``$EDGE_ANOMALY_CACHE``, else ``$XDG_CACHE_HOME/edge-anomaly``, else
``~/.cache/edge-anomaly``; a missing, unreadable or unwritable one only means this run's timing
is used alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from edge_anomaly.graph import AnomalyGraph
from runtime.cpu import local_cpu

log = logging.getLogger(__name__)

RATE_FILE = "ms-per-gflop.json"
MAX_RATE_FILE_BYTES = 64 * 1024  # a few lines per machine: anything larger is not ours
LATENCY_REPEATS = 10


def cache_dir() -> Path:
    if os.environ.get("EDGE_ANOMALY_CACHE"):
        return Path(os.environ["EDGE_ANOMALY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-anomaly"


def machine_key() -> str:
    """What the rate depends on: the CPU, the threads PyTorch uses, and PyTorch's own kernels."""
    return f"{local_cpu().model} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def _read_rates(path: Path) -> dict[str, float]:
    try:
        if path.stat().st_size > MAX_RATE_FILE_BYTES:
            raise ValueError(f"larger than {MAX_RATE_FILE_BYTES} bytes")
        rates = json.loads(path.read_text())
        return {str(key): float(value) for key, value in rates.items() if float(value) > 0}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("%s: ignored (%s); it is written again", path, exc)
        return {}


def machine_rate(measured_ms_per_gflop: float) -> float:
    """The faster of this run's measured rate and the fastest kept for this machine; the kept one is updated."""
    path = cache_dir() / RATE_FILE
    rates = _read_rates(path)
    key = machine_key()
    best = min(measured_ms_per_gflop, rates.get(key, float("inf")))
    if rates.get(key) != best:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**rates, key: best}, indent=1) + "\n")
        except OSError as exc:
            log.debug("%s: not written (%s)", path, exc)
    return best


def fastest_call_ms(graph: AnomalyGraph, image: np.ndarray) -> float:
    """The fastest of LATENCY_REPEATS calls: what the model costs, not what else the machine was doing."""
    times = []
    with torch.no_grad():
        graph(torch.from_numpy(image[None]))
        for _ in range(LATENCY_REPEATS):
            start = time.perf_counter()
            graph(torch.from_numpy(image[None]))
            times.append((time.perf_counter() - start) * 1000)
    return min(times)


class LatencyEstimate:
    """Milliseconds per image from counted GFLOP: the first candidate asked is timed, and the rate is
    never slower than the one kept for this machine (:func:`machine_rate`)."""

    def __init__(self) -> None:
        self.ms_per_gflop: float | None = None

    def __call__(self, graph: AnomalyGraph, image: np.ndarray, gflop: float) -> float:
        if self.ms_per_gflop is None:
            self.ms_per_gflop = machine_rate(fastest_call_ms(graph, image) / gflop)
        return gflop * self.ms_per_gflop
