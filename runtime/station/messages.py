"""The MQTT contract: topic names and the JSON payload of every message the daemon publishes.

Kept in one module so the documented contract (docs/station/mqtt.md) and the wire format cannot drift apart:
tests/test_docs.py checks that page's topics against ``Topics`` and every example's fields against these builders.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import cv2
import numpy as np

from runtime import package_version
from runtime.result import Result

ONLINE = "online"
OFFLINE = "offline"


def iso_time(epoch: float | None = None) -> str:
    """UTC ISO 8601 with milliseconds, e.g. ``2025-05-01T08:30:12.345Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Topics:
    prefix: str
    station: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.station}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def heartbeat(self) -> str:
        return f"{self.base}/heartbeat"

    @property
    def commands(self) -> list[str]:
        """Subscription filters for every command: ``cmd/<name>`` and ``cmd/<name>/<client id>``."""
        return [f"{self.base}/cmd/+", f"{self.base}/cmd/+/+"]

    @property
    def command_error(self) -> str:
        return f"{self.base}/cmd/error"

    def command_name(self, topic: str) -> tuple[str, str | None]:
        """(command, client id from ``cmd/<name>/<client id>`` or None)."""
        parts = topic[len(self.base) + len("/cmd/"):].split("/")
        return parts[0], parts[1] if len(parts) > 1 else None

    def result(self, camera: str) -> str:
        return f"{self.base}/{camera}/result"

    def alert(self, camera: str) -> str:
        return f"{self.base}/{camera}/alert"

    def drift(self, camera: str) -> str:
        return f"{self.base}/{camera}/drift"

    def review(self, camera: str) -> str:
        return f"{self.base}/{camera}/review"


@dataclass(frozen=True)
class BundleInfo:
    """What identifies the model a camera runs: published in status, results and alerts."""

    name: str
    hash: str
    path: str
    edge_anomaly_version: str | None
    created: str | None
    threshold: float
    self_test: dict | None = None  # runtime.self_test.SelfTestReport on this box (in status, not in results)

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash, "path": self.path,
                "edge_anomaly_version": self.edge_anomaly_version, "created": self.created}


@dataclass(frozen=True)
class Inspection:
    """One inspected frame, with everything the result and alert messages say about it."""

    id: str  # shared by the frame's result and alert
    station: str
    camera: str
    source: str
    part_id: str | None
    started: float  # epoch seconds: trigger received, file seen or frame read
    result: Result
    bundle: BundleInfo
    regions: list[tuple[int, int, int, int]]  # x, y, w, h in full-frame pixels, largest first
    heatmap_path: str | None
    total_ms: float
    trigger: int | None = None  # the accepted trigger's outbox row this inspection answers (None: not triggered)
    camera_frame: dict | None = None  # a GenICam camera's frame id and timestamp for the frame


def _verdict(inspection: Inspection) -> dict:
    result = inspection.result
    return {
        "inspection": inspection.id,
        "station": inspection.station,
        "camera": inspection.camera,
        "part_id": inspection.part_id,
        "timestamp": iso_time(inspection.started),
        "source": inspection.source,
        "score": result.score,
        "normalized_score": round(result.normalized_score, 6),
        "label": result.label,
        "confidence": round(result.confidence, 6),
        "kind": result.kind,
        "kind_scores": {name: round(value, 6) for name, value in result.kind_scores.items()},
        "threshold": inspection.bundle.threshold,
        "normalized_threshold": 0.5,
        "bundle": {"name": inspection.bundle.name, "hash": inspection.bundle.hash},
        "latency_ms": {"inference": round(result.latency_ms, 3), "total": round(inspection.total_ms, 3)},
        "heatmap_path": inspection.heatmap_path,
    } | ({"camera_frame": inspection.camera_frame} if inspection.camera_frame is not None else {})


def result_message(inspection: Inspection) -> dict:
    """``<prefix>/<station>/<camera>/result``: one per inspection (``seq`` is added by the outbox)."""
    return {"id": new_id(), **_verdict(inspection)}


def alert_message(inspection: Inspection, thumbnail: np.ndarray | None, jpeg_quality: int) -> dict:
    """``<prefix>/<station>/<camera>/alert``: anomalous inspections only, with regions and a thumbnail."""
    boxes = [{"x": x, "y": y, "width": w, "height": h} for x, y, w, h in inspection.regions]
    message = {"id": new_id(), **_verdict(inspection), "box": boxes[0] if boxes else None, "regions": boxes,
               "thumbnail": None}
    if thumbnail is not None:
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if ok:
            message["thumbnail"] = {"format": "jpeg", "width": int(thumbnail.shape[1]),
                                    "height": int(thumbnail.shape[0]),
                                    "data": base64.b64encode(encoded.tobytes()).decode("ascii")}
    return message


def drift_message(station: str, camera: str, state: dict, bundle: BundleInfo) -> dict:
    """``<prefix>/<station>/<camera>/drift``: once when a drift starts and once when it clears
    (``state`` is runtime.station.drift.DriftState.to_dict())."""
    return {"id": new_id(), "station": station, "camera": camera, "timestamp": iso_time(), **state,
            "bundle": {"name": bundle.name, "hash": bundle.hash}}


def review_message(station: str, inspection: dict, review: dict) -> dict:
    """``<prefix>/<station>/<camera>/review``: a person's verdict on an inspection (from the page), with what the
    station had said and where the frame lies for retraining (``frame``: None when no frame was kept)."""
    return {"id": new_id(), "inspection": inspection["id"], "station": station, "camera": inspection["camera"],
            "part_id": inspection["part_id"], "timestamp": iso_time(review["time"]), "verdict": review["verdict"],
            "reviewer": review["reviewer"], "note": review["note"],
            "station_verdict": {"label": inspection["label"], "kind": inspection["kind"],
                                "score": inspection["score"], "normalized_score": inspection["normalized_score"],
                                "inspected_at": iso_time(inspection["time"])},
            "bundle": {"name": inspection["bundle_name"], "hash": inspection["bundle_hash"]},
            "heatmap_path": inspection["overlay"], "frame": review["copy"]}


def status_camera(mode: str, state: str, error: str | None, bundle: BundleInfo, drift: dict,
                  capture_warning: str | None, batching: bool) -> dict:
    """One camera in ``status``: how it runs, the bundle it runs (with this box's self-test), its drift state
    (runtime.station.drift.DriftState.to_dict()), how its frames differ from the training frames, and whether its
    frames share engine calls with another camera's."""
    return {"mode": mode, "state": state, "error": error, "bundle": {**bundle.to_dict(), "self_test": bundle.self_test},
            "drift": drift, "capture_warning": capture_warning, "batching": batching}


def status_message(station: str, cameras: dict[str, dict], started: float) -> dict:
    """Retained ``<prefix>/<station>/status`` while the daemon runs (``cameras``: name -> ``status_camera``)."""
    return {"state": ONLINE, "station": station, "timestamp": iso_time(), "since": iso_time(started),
            "version": package_version(), "pid": os.getpid(), "cameras": cameras}


def heartbeat_camera(state: str, counters: dict, drift: dict, capture_warning: str | None) -> dict:
    """One camera in the heartbeat: its state, its counters and latency percentiles
    (runtime.station.stats.CameraCounters.summary()), its drift state and capture warning."""
    return {"state": state, **counters, "drift": drift, "capture_warning": capture_warning}


def heartbeat_message(station: str, started: float, cameras: dict[str, dict], *, command_errors: int,
                      outbox_pending: int, dropped_results: int, mqtt_connected: bool, mqtt_connections: int,
                      mqtt_delivered: int, mqtt_inflight: int, evidence_bytes: int) -> dict:
    """``<prefix>/<station>/heartbeat`` every ``heartbeat_s`` (``cameras``: name -> ``heartbeat_camera``): the
    station's totals are its cameras' plus the commands that failed."""
    return {
        "station": station, "timestamp": iso_time(), "uptime_s": round(time.time() - started, 1),
        "frames": sum(c["frames"] for c in cameras.values()),
        "anomalies": sum(c["anomalies"] for c in cameras.values()),
        "errors": sum(c["errors"] for c in cameras.values()) + command_errors,
        "cameras": cameras,
        "commands": {"errors": command_errors},
        "outbox": {"pending": outbox_pending, "dropped_results": dropped_results},
        "mqtt": {"connected": mqtt_connected, "connections": mqtt_connections, "delivered": mqtt_delivered,
                 "inflight": mqtt_inflight},
        "evidence": {"bytes": evidence_bytes},
    }


def offline_message(station: str, reason: str, timestamp: str | None) -> dict:
    """Retained ``status`` at a clean stop, and (reason ``connection lost``, no timestamp) the last will."""
    return {"state": OFFLINE, "station": station, "reason": reason, "timestamp": timestamp}


def error_message(command: str, error: str, payload: bytes = b"", **fields: object) -> dict:
    """``<prefix>/<station>/cmd/error``: a command that could not be carried out, and why.

    Only the first 256 bytes of the payload are echoed, and the error text is cut at 1000
    characters: an answer is never a copy of whatever someone published.
    """
    return {"id": new_id(), "timestamp": iso_time(), "command": command[:64], "error": error[:1000],
            "payload": payload[:256].decode("utf-8", "replace"), **fields}
