"""The station's cameras: one worker per camera with the bundle it runs, built at start (cameras with the same
engine settings share one loaded bundle), swapped whole on a reload (a bundle refused keeps the running one),
changed in place at SIGHUP (only the engine changed: no restart, no frame lost), and restarted when a camera
thread died. Start, reload and SIGHUP build the detectors alike (``inspection.load_groups``), so cameras that run
one bundle share one engine, batched, whichever way they came to it, and a camera left alone runs a lone camera's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path

from runtime.batching import BatchingBackend
from runtime.signing import TrustList
from runtime.station.config import BatchingConfig, CameraConfig
from runtime.station.inspection import (
    ENGINE_FIELDS,
    InspectionOutputs,
    Inspector,
    Loaded,
    LoadedBundle,
    engine_key,
    load_groups,
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
        self.batching = batching
        self._reload_lock = threading.Lock()  # one reload or SIGHUP at a time: each sees the cameras as they run
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
            configs = {name: self.workers[name].config for name in cameras}
            wanted = {name: config.model_copy(update={"bundle": bundle}) if bundle else config
                      for name, config in configs.items()}
            for name, loaded in self._load(wanted).items():
                if isinstance(loaded, Exception):
                    old = self.workers[name].inspector.loaded.info
                    outcome[name] = (f"bundle {wanted[name].bundle} refused: {loaded}; camera {name} keeps "
                                     f"{old.name} ({old.hash[:12]})")
                    publisher.command_error("reload", outcome[name], camera=name, bundle=str(wanted[name].bundle))
                    continue
                outcome[name] = None
                self._swap(name, loaded)
        publisher.status_changed()
        return outcome

    def _load(self, wanted: dict[str, CameraConfig]) -> dict[str, Loaded]:
        """Load the bundles of the cameras ``wanted`` (name -> the settings to run) as the start does
        (:func:`load_groups`), and keep every other camera's engine what the start would build:

        - a running camera outside ``wanted`` whose bundle and settings are those of a group joins it (and is swapped
          onto it here), so that cameras of one bundle keep sharing one engine, batched;
        - a camera left alone on a batched engine (the cameras it shared it with moved off it) gets a lone camera's
          engine (latency hint, unbatched), loaded again from the bundle it runs.

        Returns each wanted camera's bundle, or why its group's was refused (the group's cameras keep theirs)."""
        keys = {engine_key(camera) for camera in wanted.values()}
        joining = [running for name, worker in self.workers.items() if name not in wanted
                   and engine_key(running := self._running(worker)) in keys]
        outcome = {camera.name: loaded for group, loaded in load_groups([*wanted.values(), *joining], self.trust,
                                                                        self.batching) for camera in group}
        moved = {name for name, loaded in outcome.items() if not isinstance(loaded, Exception)}
        for camera in joining:
            self._swap_along(camera.name, outcome.pop(camera.name), "it runs the reloaded bundle")
        left = self._left_alone(moved)
        for group, loaded in load_groups(left, self.trust, self.batching):
            for camera in group:
                self._swap_along(camera.name, loaded, "it is left alone on an engine batched for several cameras")
        return outcome

    def _left_alone(self, moved: set[str]) -> list[CameraConfig]:
        """The running cameras outside ``moved`` that would be the only one on their engine while it batches."""
        staying = {name: worker for name, worker in self.workers.items() if name not in moved}
        runs = Counter(id(worker.inspector.loaded) for worker in staying.values())
        return [self._running(worker) for worker in staying.values() if runs[id(worker.inspector.loaded)] == 1
                and isinstance(worker.inspector.loaded.detector.backend, BatchingBackend)]

    def _swap_along(self, name: str, loaded: Loaded, why: str) -> None:
        """Swap in the bundle a camera not named in the reload was loaded again with (``why``); a refusal keeps the
        running one, logged (it is not that reload's answer)."""
        if isinstance(loaded, Exception):
            running = self.workers[name].inspector.loaded.info
            log.error("camera %s keeps bundle %s (%s): loading it again (%s) failed: %s", name, running.name,
                      running.hash[:12], why, loaded, extra={"camera": name})
            return
        self._swap(name, loaded)

    @staticmethod
    def _running(worker: CameraWorker) -> CameraConfig:
        """The camera's settings with the bundle it runs (a cmd/reload's lasts until the restart)."""
        return worker.config.model_copy(update={"bundle": Path(worker.inspector.loaded.info.path)})

    def _swap(self, name: str, loaded: LoadedBundle) -> None:
        inspector = self.workers[name].inspector
        old = inspector.loaded.info
        inspector.swap(loaded)
        log.info("camera %s now runs bundle %s (%s), was %s (%s)", name, loaded.info.name, loaded.info.hash[:12],
                 old.name, old.hash[:12], extra={"camera": name, "bundle": loaded.info.name, "hash": loaded.info.hash})

    def apply(self, old: list[CameraConfig], new: list[CameraConfig]) -> None:
        """SIGHUP: cameras removed, added or changed; one whose new bundle is refused keeps its running setup."""
        before = {camera.name: camera for camera in old}
        with self._reload_lock:
            for name in set(before) - {camera.name for camera in new}:
                worker = self.workers.pop(name)
                worker.stop()
                worker.join(timeout=30)
                log.info("SIGHUP: camera %s removed", name)
            changed = [camera for camera in new if before.get(camera.name) != camera]
            loaded = self._load({camera.name: camera for camera in changed if camera.name not in before or any(
                getattr(before[camera.name], f) != getattr(camera, f) for f in ENGINE_FIELDS)})
            for camera in changed:
                self._apply_camera(before.get(camera.name), camera, loaded.get(camera.name))

    def _apply_camera(self, old: CameraConfig | None, new: CameraConfig, loaded: Loaded | None) -> None:
        """``loaded``: the camera's new bundle, why it was refused, or None (its engine did not change)."""
        if isinstance(loaded, Exception):
            log.error("SIGHUP: camera %s keeps its running setup: bundle %s refused: %s", new.name, new.bundle,
                      loaded, extra={"camera": new.name})
            return
        worker = self.workers.get(new.name)
        loaded = loaded or worker.inspector.loaded
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


def batched(workers: dict[str, CameraWorker]) -> dict[str, bool]:
    """Each camera: whether its frames go through engine calls with other cameras' (runtime/batching.py): its
    engine batches and another camera runs the same one (as started, or as reloaded)."""
    runs = Counter(id(worker.inspector.loaded) for worker in workers.values())
    return {name: isinstance(worker.inspector.loaded.detector.backend, BatchingBackend)
            and runs[id(worker.inspector.loaded)] > 1 for name, worker in workers.items()}
