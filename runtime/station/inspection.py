"""One frame through one camera's detector, into the outbox as a result (and an alert if anomalous).

The camera's detector is held in one attribute: a reload builds the new detector completely
and then replaces the reference, so a frame always runs on one whole detector, old or new, and
no frame is dropped or delayed by the swap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.batching import share_engine, shared_performance
from runtime.capture_check import CaptureCheck
from runtime.detector import Detector
from runtime.predict_files import annotate
from runtime.signing import TrustList
from runtime.station.config import BatchingConfig, CameraConfig
from runtime.station.drift import DriftMonitor
from runtime.station.evidence import EvidenceStore
from runtime.station.messages import (
    BundleInfo,
    Inspection,
    Topics,
    alert_message,
    drift_message,
    new_id,
    result_message,
)
from runtime.station.outbox import ALERT, RESULT, Outbox
from runtime.station.stats import StationStats
from runtime.visualize import anomaly_regions, thumbnail

log = logging.getLogger(__name__)

VIDEO_SOURCES = ("video", "stream")  # source kinds whose frames come through a video codec


@dataclass(frozen=True)
class LoadedBundle:
    detector: Detector
    info: BundleInfo


def load_bundle(path: Path, camera: CameraConfig, trust: TrustList | None = None, cameras: int = 1,
                batching: BatchingConfig | None = None) -> LoadedBundle:
    """Open, verify and start a bundle for ``camera``: raises BundleError on a hash mismatch and, with a
    trust list, on a bundle that is unsigned or signed by a key not in it (before any file is hashed).

    The camera's ``roi`` goes to the Detector, which maps its heatmap and regions back to the frame.
    ``cameras``: how many cameras share this detector, which ``batching`` may batch (runtime/batching.py).
    """
    batching = batching or BatchingConfig(mode="off")
    detector = Detector.load(path, backend=camera.backend, device=camera.device, threads=camera.threads,
                             roi=list(camera.roi) if camera.roi is not None else None,
                             check=trust.verify if trust is not None else None, self_test=camera.self_test,
                             performance=shared_performance(batching.mode, cameras))
    share_engine(detector, cameras, batching.mode, batching.max_wait_ms)
    manifest = detector.bundle.manifest
    info = BundleInfo(name=detector.name, hash=detector.bundle.hash, path=str(path),
                      edge_anomaly_version=manifest.edge_anomaly_version, created=manifest.created,
                      threshold=manifest.scoring.local.threshold,
                      self_test=detector.self_test.to_dict() if detector.self_test else None)
    return LoadedBundle(detector, info)


class Inspector:
    def __init__(self, station: str, camera: CameraConfig, loaded: LoadedBundle, topics: Topics, outbox: Outbox,
                 notify: Callable[[], None], stats: StationStats, evidence: EvidenceStore | None,
                 save: str, observe: Callable[[Inspection, np.ndarray], None] | None = None) -> None:
        self.station = station
        self.camera = camera
        self.loaded = loaded
        self.topics = topics
        self.outbox = outbox
        self.notify = notify
        self.stats = stats
        self.evidence = evidence
        self.save = save
        self.drift = self._drift_monitor(loaded)
        self.capture_check = self._capture_check(loaded)
        self.observe = observe  # the station's page: history and live view

    def swap(self, loaded: LoadedBundle) -> None:
        self.drift = self._drift_monitor(loaded)  # a new bundle brings its own reference
        self.capture_check = self._capture_check(loaded)
        self.loaded = loaded

    @staticmethod
    def _capture_check(loaded: LoadedBundle) -> CaptureCheck:
        return CaptureCheck(loaded.detector.capture_profile, loaded.detector.scoring)

    @property
    def capture_warning(self) -> str | None:
        """How this camera's frames differ from the bundle's training frames, once its first frames were seen."""
        return next(iter(self.capture_check.warnings.values()), None)

    def _drift_monitor(self, loaded: LoadedBundle) -> DriftMonitor | None:
        settings = self.camera.drift
        if not settings.enabled:
            return None
        return DriftMonitor.for_manifest(loaded.detector.bundle.manifest.drift_reference, window=settings.window,
                                         every=settings.every, persist=settings.persist)

    @property
    def drift_state(self) -> dict:
        """The camera's drift state for status and heartbeat (``{"state": "off"}`` when disabled)."""
        monitor = self.drift
        return monitor.state.to_dict() if monitor is not None else {"state": "off"}

    def inspect(self, frame: np.ndarray, source: str, part_id: str | None, started: float,
                started_perf: float, answers: int | None = None, camera_frame: dict | None = None) -> Inspection:
        """Run the detector and queue the messages; ``started``/``started_perf`` date the trigger or frame;
        ``answers`` is the accepted trigger's outbox row, deleted with the result."""
        loaded = self.loaded  # one detector for the whole frame, even if a reload swaps it meanwhile
        result = loaded.detector.predict([frame])[0]
        boxes = anomaly_regions(result.heatmap) if result.is_anomalous else []
        inspection_id = new_id()
        heatmap_path = self._save_evidence(inspection_id, frame, result, started)
        inspection = Inspection(
            station=self.station, camera=self.camera.name, source=source, part_id=part_id, started=started,
            result=result, bundle=loaded.info, regions=boxes[:self.camera.alert.max_regions],
            heatmap_path=heatmap_path, total_ms=(time.perf_counter() - started_perf) * 1000, id=inspection_id,
            trigger=answers, camera_frame=camera_frame)
        if result.is_anomalous:  # the alert first: a station killed in between has answered the trigger anyway
            self.outbox.put(ALERT, self.topics.alert(self.camera.name),
                            alert_message(inspection, self._thumbnail(frame, boxes), self.camera.alert.jpeg_quality))
        self.outbox.put(RESULT, self.topics.result(self.camera.name), result_message(inspection), answers=answers)
        self.notify()
        self.stats.record(self.camera.name, result, inspection.total_ms)
        self._watch_drift(result, started, loaded.info)
        source_kind = self.camera.source.kind if self.camera.source is not None else "images"
        self.capture_check.observe(self.camera.name, source_kind in VIDEO_SOURCES, frame.shape[:2],
                                   result.capture_stats)
        if self.observe is not None:
            self.observe(inspection, frame)
        return inspection

    def _watch_drift(self, result, moment: float, bundle: BundleInfo) -> None:
        """Feed the drift monitor; publish once when a drift starts or clears."""
        monitor = self.drift
        if monitor is None:
            return
        change = monitor.observe(result.kind_scores.get("local", result.normalized_score), result.global_stats, moment)
        if change is not None:
            log.warning("drift: %s", change.to_dict(), extra={"camera": self.camera.name})
            self.outbox.put(ALERT, self.topics.drift(self.camera.name),
                            drift_message(self.station, self.camera.name, change.to_dict(), bundle))
            self.notify()

    def _save_evidence(self, inspection_id: str, frame: np.ndarray, result, moment: float) -> str | None:
        if self.evidence is None or self.save == "none" or (self.save == "anomalous" and not result.is_anomalous):
            return None
        try:
            return str(self.evidence.save(self.camera.name, inspection_id, annotate(frame, result), moment,
                                          frame_rgb=frame))
        except OSError as exc:
            log.error("cannot save evidence: %s", exc, extra={"camera": self.camera.name})
            self.stats.error(self.camera.name, "evidence")
            return None

    def _thumbnail(self, frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray | None:
        """A close-up of the largest region; the whole frame for lighting or blur, which have none."""
        if not self.camera.alert.thumbnail:
            return None
        box = boxes[0] if boxes else (0, 0, frame.shape[1], frame.shape[0])
        return thumbnail(frame, box, size=self.camera.alert.thumbnail_px, pad=0.25 if boxes else 0.0)
