"""The station's cameras: one worker per camera with the bundle it runs, built at start (cameras with the same
engine settings share one loaded bundle), swapped whole on a reload (a bundle refused keeps the running one),
changed in place at SIGHUP (only the engine changed: no restart, no frame lost), and restarted when a camera
thread died.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from runtime.signing import TrustList
from runtime.station.config import BatchingConfig, CameraConfig
from runtime.station.inspection import (
    ENGINE_FIELDS,
    InspectionOutputs,
    Inspector,
    LoadedBundle,
    load_bundle,
    shared_bundles,
)
from runtime.station.view import CameraView
from runtime.station.workers import OK, CameraWorker, Trigger

log = logging.getLogger(__name__)

STALL_S = 60.0  # a worker that shows no sign of life this long (outside an inspection) is reported stalled


class Cameras:
    def __init__(self, cameras: list[CameraConfig], trust: TrustList | None, outputs: InspectionOutputs,
                 batching: BatchingConfig | None = None) -> None:
        self.trust = trust
        self.outputs = outputs
        self.workers: dict[str, CameraWorker] = {}
        self._reload_lock = threading.Lock()
        loaded = shared_bundles(cameras, trust, batching)
        for camera in cameras:
            self.workers[camera.name] = self._make_worker(camera, loaded[camera.name])

    def _make_worker(self, camera: CameraConfig, loaded: LoadedBundle) -> CameraWorker:
        publisher = self.outputs.publisher
        return CameraWorker(camera, Inspector(camera, loaded, self.outputs), self.outputs.stats,
                            publisher.status_changed, self._trigger_failed)

    def _trigger_failed(self, trigger: Trigger, camera: str, error: str) -> None:
        self.outputs.publisher.trigger_error(trigger.part_id, trigger.row, camera, error)

    def views(self) -> dict[str, CameraView]:
        return {name: CameraView.of(worker.config, worker.inspector.loaded)
                for name, worker in list(self.workers.items())}

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def stop(self) -> None:
        """Every camera finishes the frame in hand and answers the triggers still waiting; joined."""
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join()

    def release(self) -> None:
        """Drop the engines (called by the last thread left, which holds the GIL)."""
        for worker in self.workers.values():
            worker.inspector.loaded = None

    def problems(self, stopping: bool) -> list[str]:
        now = time.monotonic()
        problems = []
        for name, worker in self.workers.items():
            if not worker.alive and not stopping:
                problems.append(f"camera {name}: worker thread is dead ({worker.error or 'no error recorded'})")
            elif worker.state != OK:
                problems.append(f"camera {name} is {worker.state}" + (f" ({worker.error})" if worker.error else ""))
            elif worker.busy_since is None and now - worker.beat > STALL_S:
                problems.append(f"camera {name}: worker stalled (no progress for {now - worker.beat:.0f} s)")
        return problems

    def supervise(self) -> None:
        """Restart a camera loop that died; /healthz said why meanwhile."""
        for name, worker in list(self.workers.items()):
            if not worker.alive:
                log.error("camera %s worker thread died; restarting it", name, extra={"camera": name})
                replacement = self._make_worker(worker.config, worker.inspector.loaded)
                self.workers[name] = replacement
                replacement.start()

    # -- reloads and SIGHUP -------------------------------------------------------------------------

    def reload_bundles(self, cameras: list[str], bundle: Path | None) -> dict[str, str | None]:
        """Load each camera's new bundle (default: its configured path) and swap it in; a bundle that fails
        to load, its hash and signature checks included, is refused and the running one stays. Returns each
        camera's refusal (None: it runs the new bundle)."""
        outcome: dict[str, str | None] = {}
        publisher = self.outputs.publisher
        with self._reload_lock:
            for name in cameras:
                worker = self.workers[name]
                path = bundle or worker.config.bundle
                old = worker.inspector.loaded.info
                try:
                    loaded = load_bundle(path, worker.config, self.trust)
                except Exception as exc:
                    outcome[name] = f"bundle {path} refused: {exc}; camera {name} keeps {old.name} ({old.hash[:12]})"
                    publisher.command_error("reload", outcome[name], camera=name, bundle=str(path))
                    continue
                outcome[name] = None
                worker.inspector.swap(loaded)
                log.info("camera %s now runs bundle %s (%s), was %s (%s)", name, loaded.info.name,
                         loaded.info.hash[:12], old.name, old.hash[:12],
                         extra={"camera": name, "bundle": loaded.info.name, "hash": loaded.info.hash})
        publisher.status_changed()
        return outcome

    def apply(self, old: list[CameraConfig], new: list[CameraConfig]) -> None:
        """SIGHUP: cameras removed, added or changed; one whose new bundle is refused keeps its running setup."""
        before = {camera.name: camera for camera in old}
        for name in set(before) - {camera.name for camera in new}:
            worker = self.workers.pop(name)
            worker.stop()
            worker.join(timeout=30)
            log.info("SIGHUP: camera %s removed", name)
        for camera in new:
            self._apply_camera(before.get(camera.name), camera)

    def _apply_camera(self, old: CameraConfig | None, new: CameraConfig) -> None:
        if old == new:
            return
        worker = self.workers.get(new.name)
        try:
            engine_changed = old is None or any(getattr(old, f) != getattr(new, f) for f in ENGINE_FIELDS)
            loaded = load_bundle(new.bundle, new, self.trust) if engine_changed else worker.inspector.loaded
        except Exception as exc:
            log.error("SIGHUP: camera %s keeps its running setup: bundle %s refused: %s", new.name, new.bundle, exc,
                      extra={"camera": new.name})
            return
        if worker is not None and old.model_copy(update={f: getattr(new, f) for f in ENGINE_FIELDS}) == new:
            worker.config = new
            worker.inspector.camera = new
            worker.inspector.swap(loaded)  # only the engine changed: no restart, no frame lost
            return
        if worker is not None:
            worker.stop()
            worker.join(timeout=30)
        replacement = self._make_worker(new, loaded)
        self.workers[new.name] = replacement
        log.info("SIGHUP: camera %s (re)started in %s mode", new.name, new.mode)
        replacement.start()
