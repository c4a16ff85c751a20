"""One frame through one camera's detector, into the outbox as a result (and an alert if anomalous).

The camera's detector is held in one attribute: a reload builds the new detector completely
and then replaces the reference, so a frame always runs on one whole detector, old or new, and
no frame is dropped or delayed by the swap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.batching import share_engine, shared_performance
from runtime.capture_check import CaptureCheck
from runtime.detector import Detector
from runtime.manifest import Signature
from runtime.signing import TrustList
from runtime.station.config import BatchingConfig, CameraConfig
from runtime.station.drift import DriftMonitor
from runtime.station.evidence import EvidenceStore
from runtime.station.messages import BundleInfo, Inspection, new_id
from runtime.station.publisher import Publisher
from runtime.station.stats import StationStats
from runtime.visualize import annotate, anomaly_regions, thumbnail

log = logging.getLogger(__name__)

ENGINE_FIELDS = ("bundle", "backend", "device", "threads", "roi", "self_test")  # what a camera's Detector is made of


@dataclass(frozen=True)
class LoadedBundle:
    detector: Detector
    info: BundleInfo

    @property
    def signature(self) -> Signature | None:
        return self.detector.bundle.manifest.signature


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


def engine_key(camera: CameraConfig) -> tuple:
    """What makes two cameras' Detectors the same: ``ENGINE_FIELDS``, the bundle's path resolved."""
    return (camera.bundle.resolve(), *(getattr(camera, name) for name in ENGINE_FIELDS[1:]))


def sharing_groups(cameras: list[CameraConfig]) -> list[list[CameraConfig]]:
    """``cameras`` grouped by :func:`engine_key`, in order: each group shares one Detector."""
    groups: dict[tuple, list[CameraConfig]] = {}
    for camera in cameras:
        groups.setdefault(engine_key(camera), []).append(camera)
    return list(groups.values())


def load_shared(group: list[CameraConfig], trust: TrustList | None,
                batching: BatchingConfig | None = None) -> LoadedBundle:
    """The one Detector of a group of :func:`sharing_groups`, at start and at every reload alike: its engine
    ``batching`` may batch (instead of the group's cameras taking turns on it)."""
    return load_bundle(group[0].bundle, group[0], trust, len(group), batching)


Loaded = LoadedBundle | Exception  # a group's Detector, or why its bundle was refused


def load_groups(cameras: list[CameraConfig], trust: TrustList | None,
                batching: BatchingConfig | None = None) -> Iterator[tuple[list[CameraConfig], Loaded]]:
    """Each group of :func:`sharing_groups` with its one Detector (:func:`load_shared`) or why it was refused, one
    group at a time: the start, every reload and ``serve --check`` load through here, so they load the same engines."""
    for group in sharing_groups(cameras):
        try:
            loaded: Loaded = load_shared(group, trust, batching)
        except Exception as exc:
            loaded = exc
        yield group, loaded


def shared_bundles(cameras: list[CameraConfig], trust: TrustList | None,
                   batching: BatchingConfig | None = None) -> dict[str, LoadedBundle]:
    """Each camera's loaded bundle (:func:`load_groups`); raises the first refusal, loading no bundle after it."""
    bundles: dict[str, LoadedBundle] = {}
    for group, loaded in load_groups(cameras, trust, batching):
        if isinstance(loaded, Exception):
            raise loaded
        bundles |= {camera.name: loaded for camera in group}
    return bundles


@dataclass(frozen=True)
class InspectionOutputs:
    """Where every camera's inspections go; one for the whole station, shared by its inspectors."""

    publisher: Publisher
    stats: StationStats
    evidence: EvidenceStore | None  # None: the station keeps no evidence
    save: str  # evidence.save: "all", "anomalous" or "none"


@dataclass(frozen=True)
class Shot:
    """One frame to inspect and where it came from; ``started``/``started_perf`` date the trigger or frame,
    ``answers`` is the accepted trigger's outbox row (deleted with the result)."""

    image: np.ndarray
    source: str  # the file or the (credential-free) source name and frame index
    started: float  # epoch seconds
    started_perf: float  # time.perf_counter() at the same moment, for latency
    part_id: str | None = None
    answers: int | None = None
    camera_frame: dict | None = None  # an industrial camera's own frame id and timestamp
    compressed: bool = False  # came through a video codec (the capture check expects its artefacts)


def _measured(loaded: LoadedBundle) -> tuple:
    """What a camera's drift window and capture comparison were measured on: the bundle and the frame's region."""
    return loaded.info.hash, loaded.detector.roi, loaded.detector.center_crop


class Inspector:
    """One camera's inspections: its detector (swapped whole on a reload), drift monitor and capture check."""

    def __init__(self, camera: CameraConfig, loaded: LoadedBundle, outputs: InspectionOutputs) -> None:
        self.camera = camera
        self.loaded = loaded
        self.outputs = outputs
        self.drift = self._drift_monitor(loaded)
        self.capture_check = self._capture_check(loaded)

    def swap(self, loaded: LoadedBundle) -> None:
        """Run ``loaded`` from the next frame on. The drift monitor and the capture check belong to what the camera
        measures: another bundle (another hash) brings its own reference and training frames, and another region of
        the frame (the camera's ``roi``) gives other statistics, so either starts them afresh; the same bundle on the
        same region (a camera joining another camera's reload, an engine setting changed) keeps the camera's drift
        window and capture comparison."""
        if _measured(loaded) != _measured(self.loaded):
            self.drift = self._drift_monitor(loaded)
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

    def inspect(self, shot: Shot) -> Inspection:
        """Run the detector, queue the messages, keep the evidence, then tell the page and the OPC UA server."""
        loaded = self.loaded  # one detector for the whole frame, even if a reload swaps it meanwhile
        frame, camera, publisher = shot.image, self.camera, self.outputs.publisher
        result = loaded.detector.predict([frame])[0]
        boxes = anomaly_regions(result.heatmap) if result.is_anomalous else []
        inspection_id = new_id()
        heatmap_path = self._save_evidence(inspection_id, frame, result, shot.started)
        inspection = Inspection(
            station=publisher.station, camera=camera.name, source=shot.source, part_id=shot.part_id,
            started=shot.started, result=result, bundle=loaded.info, regions=boxes[:camera.alert.max_regions],
            heatmap_path=heatmap_path, total_ms=(time.perf_counter() - shot.started_perf) * 1000, id=inspection_id,
            trigger=shot.answers, camera_frame=shot.camera_frame)
        publisher.inspection(inspection, self._thumbnail(frame, boxes) if result.is_anomalous else None,
                             camera.alert.jpeg_quality)
        self.outputs.stats.record(camera.name, result, inspection.total_ms)
        self._watch_drift(result, shot.started, loaded.info)
        self.capture_check.observe(camera.name, shot.compressed, frame.shape[:2], result.capture_stats)
        publisher.observed(inspection, frame)
        return inspection

    def _watch_drift(self, result, moment: float, bundle: BundleInfo) -> None:
        """Feed the drift monitor; publish once when a drift starts or clears."""
        monitor = self.drift
        if monitor is None:
            return
        change = monitor.observe(result.kind_scores.get("local", result.normalized_score), result.global_stats, moment)
        if change is not None:
            log.warning("drift: %s", change.to_dict(), extra={"camera": self.camera.name})
            self.outputs.publisher.drift(self.camera.name, change.to_dict(), bundle)

    def _save_evidence(self, inspection_id: str, frame: np.ndarray, result, moment: float) -> str | None:
        evidence, save = self.outputs.evidence, self.outputs.save
        if evidence is None or save == "none" or (save == "anomalous" and not result.is_anomalous):
            return None
        try:
            return str(evidence.save(self.camera.name, inspection_id, annotate(frame, result), moment,
                                     frame_rgb=frame))
        except OSError as exc:
            log.error("cannot save evidence: %s", exc, extra={"camera": self.camera.name})
            self.outputs.stats.error(self.camera.name, "evidence")
            return None
    def _thumbnail(self, frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray | None:
        """A close-up of the largest region; the whole frame for lighting or blur, which have none."""
        if not self.camera.alert.thumbnail:
            return None
        box = boxes[0] if boxes else (0, 0, frame.shape[1], frame.shape[0])
        return thumbnail(frame, box, size=self.camera.alert.thumbnail_px, pad=0.25 if boxes else 0.0)
