"""Counters the daemon reports twice: as Prometheus metrics and in the MQTT heartbeat.

The heartbeat's latency p50/p95 are over the last ``window`` inspections of each camera, so
they follow the line's current state rather than the average since start.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.result import Result

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


@dataclass
class CameraCounters:
    frames: int = 0
    anomalies: int = 0
    errors: int = 0
    corrupt_frames: int = 0  # skipped by the source as broken (undecodable, incomplete): never inspected
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=1000))

    def summary(self) -> dict:
        def percentiles(values: deque) -> dict:
            if not values:
                return {"p50": None, "p95": None}
            p50, p95 = np.percentile(np.fromiter(values, float), [50, 95])
            return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}

        return {"frames": self.frames, "anomalies": self.anomalies, "errors": self.errors,
                "corrupt_frames": self.corrupt_frames, "latency_ms": percentiles(self.latencies_ms),
                "inference_ms": percentiles(self.inference_ms)}


class StationStats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self.cameras: dict[str, CameraCounters] = {}
        self.command_errors = 0
        self._frames = Counter("edge_anomaly_frames", "Frames inspected", ["camera"], registry=self.registry)
        self._anomalies = Counter("edge_anomaly_anomalies", "Anomalous verdicts", ["camera", "kind"],
                                  registry=self.registry)
        self._errors = Counter("edge_anomaly_errors", "Frames or commands that failed", ["camera", "reason"],
                               registry=self.registry)
        self._corrupt = Counter("edge_anomaly_corrupt_frames", "Frames a source skipped as broken (undecodable, "
                                "incomplete)", ["camera"], registry=self.registry)
        self._latency = Histogram("edge_anomaly_latency_seconds", "Frame (or trigger) to result queued",
                                  ["camera"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._inference = Histogram("edge_anomaly_inference_seconds", "Detector.predict time", ["camera"],
                                    buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._camera_up = Gauge("edge_anomaly_camera_up", "1 when the camera delivers frames", ["camera"],
                                registry=self.registry)

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A metric read when scraped (outbox size, broker connection, ...)."""
        Gauge(name, description, registry=self.registry).set_function(read)

    def _camera(self, camera: str) -> CameraCounters:
        return self.cameras.setdefault(camera, CameraCounters())

    def record(self, camera: str, result: Result, total_ms: float) -> None:
        with self._lock:
            counters = self._camera(camera)
            counters.frames += 1
            counters.anomalies += result.is_anomalous
            counters.latencies_ms.append(total_ms)
            counters.inference_ms.append(result.latency_ms)
        self._frames.labels(camera).inc()
        if result.is_anomalous:
            self._anomalies.labels(camera, result.kind or "local").inc()
        self._latency.labels(camera).observe(total_ms / 1000)
        self._inference.labels(camera).observe(result.latency_ms / 1000)

    def error(self, camera: str, reason: str) -> None:
        with self._lock:
            self._camera(camera).errors += 1
        self._errors.labels(camera, reason).inc()

    def corrupt_frames(self, camera: str, count: int) -> None:
        if not count:
            return
        with self._lock:
            self._camera(camera).corrupt_frames += count
        self._corrupt.labels(camera).inc(count)

    def command_error(self) -> None:
        with self._lock:
            self.command_errors += 1
        self._errors.labels("", "command").inc()

    def camera_up(self, camera: str, up: bool) -> None:
        self._camera_up.labels(camera).set(1 if up else 0)

    def summary(self, camera: str) -> dict:
        with self._lock:
            return self._camera(camera).summary()
