"""One thread per camera: continuous frames, PLC triggers or a watched folder, into the inspector.

Nothing a camera does stops the daemon: a bad frame is counted and skipped, a camera that goes
away is closed and reopened with back-off (its state shows in the status message), and a
trigger that cannot be served is answered on ``cmd/error`` with its ``part_id``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from runtime.image_io import ImageReadError, read_image
from runtime.station.cameras import FrameError, FrameSource, SourceError, open_source
from runtime.station.config import CameraConfig
from runtime.station.inspection import Inspector
from runtime.station.stats import StationStats
from runtime.station.watch import FolderWatcher

log = logging.getLogger(__name__)

STARTING, OK, RECONNECTING, ENDED, FAILED, STOPPED = "starting", "ok", "reconnecting", "ended", "failed", "stopped"


@dataclass(frozen=True)
class Trigger:
    part_id: str
    received: float  # epoch seconds
    received_perf: float  # time.perf_counter() at arrival, for latency


class CameraWorker:
    def __init__(self, config: CameraConfig, inspector: Inspector, stats: StationStats,
                 on_state: Callable[[], None], on_trigger_error: Callable[[Trigger, str, str], None]) -> None:
        self.config = config
        self.inspector = inspector
        self.stats = stats
        self.state = STARTING
        self.error: str | None = None
        self._on_state = on_state
        self._on_trigger_error = on_trigger_error
        self._triggers: queue.SimpleQueue[Trigger] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{config.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def describe(self) -> dict:
        info = self.inspector.loaded.info
        return {"mode": self.config.mode, "state": self.state, "error": self.error,
                "bundle": {**info.to_dict(), "self_test": info.self_test}}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the frame in hand (and triggers already received), then end the thread."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def trigger(self, part_id: str) -> None:
        self._triggers.put(Trigger(part_id, time.time(), time.perf_counter()))

    # -- thread ---------------------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        if (state, error) == (self.state, self.error):
            return
        self.state, self.error = state, error
        self.stats.camera_up(self.name, state == OK)
        level = logging.INFO if state in (OK, STOPPED) else logging.WARNING
        log.log(level, "camera %s is %s%s", self.name, state, f": {error}" if error else "",
                extra={"camera": self.name, "state": state})
        self._on_state()

    def _run(self) -> None:
        try:
            if self.config.mode == "folder":
                self._run_folder()
            else:
                self._run_source()
        except Exception as exc:  # a bug, not bad input: report it and let /healthz say so
            log.exception("camera %s stopped on an unexpected error", self.name, extra={"camera": self.name})
            self._set_state(FAILED, f"{type(exc).__name__}: {exc}")
        else:
            if self.state != ENDED:
                self._set_state(STOPPED)

    def _inspect(self, frame, source: str, part_id: str | None, started: float, started_perf: float) -> bool:
        try:
            self.inspector.inspect(frame, source, part_id, started, started_perf)
            return True
        except Exception as exc:
            log.error("camera %s: inspection of %s failed: %s", self.name, source, exc,
                      extra={"camera": self.name, "part_id": part_id})
            self.stats.error(self.name, "inspection")
            return False

    def _run_source(self) -> None:
        settings = self.config.source
        source: FrameSource | None = None
        delay = settings.reopen.min_s
        next_due = time.monotonic()
        frame_count = 0
        while not self._stop.is_set():
            if source is None:
                try:
                    source = open_source(settings)
                except SourceError as exc:
                    self._set_state(RECONNECTING, str(exc))
                    self._reject_triggers(f"camera {self.name} is unavailable: {exc}")
                    self._stop.wait(delay)
                    delay = min(delay * 2, settings.reopen.max_s)
                    continue
                self._set_state(OK)
                delay = settings.reopen.min_s
            try:
                if self.config.mode == "trigger":
                    self._serve_trigger(source)
                else:
                    frame_count += 1
                    next_due = self._continuous_step(source, frame_count, next_due)
            except SourceError as exc:
                source.close()
                source = None
                if not settings.loop and settings.kind in ("video", "images"):
                    self._set_state(ENDED, str(exc))
                    break
                self._set_state(RECONNECTING, str(exc))
        if self.config.mode == "trigger":
            self._drain_triggers(source)
        if source is not None:
            source.close()

    def _continuous_step(self, source: FrameSource, frame_count: int, next_due: float) -> float:
        started, started_perf = time.time(), time.perf_counter()
        try:
            frame, label = source.read()
        except FrameError as exc:
            log.warning("camera %s: %s", self.name, exc, extra={"camera": self.name})
            self.stats.error(self.name, "frame")
            return next_due
        if (frame_count - 1) % self.config.every_nth:
            return next_due
        self._inspect(frame, label, None, started, started_perf)
        if self.config.rate_hz is None:
            return next_due
        next_due = max(next_due + 1.0 / self.config.rate_hz, time.monotonic())
        self._stop.wait(next_due - time.monotonic())
        return next_due

    def _serve_trigger(self, source: FrameSource) -> None:
        try:
            trigger = self._triggers.get(timeout=0.2)
        except queue.Empty:
            return
        self._serve_one(source, trigger)

    def _serve_one(self, source: FrameSource, trigger: Trigger) -> None:
        try:
            frame, label = source.read()
        except FrameError as exc:
            self.stats.error(self.name, "frame")
            self._on_trigger_error(trigger, self.name, f"bad frame: {exc}")
            return
        except SourceError as exc:
            self.stats.error(self.name, "camera")
            self._on_trigger_error(trigger, self.name, f"camera {self.name} lost: {exc}")
            raise
        if not self._inspect(frame, label, trigger.part_id, trigger.received, trigger.received_perf):
            self._on_trigger_error(trigger, self.name, "inspection failed (see the daemon log)")

    def _reject_triggers(self, reason: str) -> None:
        while True:
            try:
                trigger = self._triggers.get_nowait()
            except queue.Empty:
                return
            self.stats.error(self.name, "camera")
            self._on_trigger_error(trigger, self.name, reason)

    def _drain_triggers(self, source: FrameSource | None) -> None:
        """At shutdown: answer the triggers already received, with a result if the camera can."""
        while source is not None:
            try:
                trigger = self._triggers.get_nowait()
            except queue.Empty:
                return
            try:
                self._serve_one(source, trigger)
            except SourceError:
                source = None
        self._reject_triggers(f"camera {self.name} is shutting down")

    def _run_folder(self) -> None:
        watcher = FolderWatcher(self.config.watch)
        while not self._stop.is_set():
            try:
                ready = watcher.ready()
            except FileNotFoundError as exc:
                self._set_state(RECONNECTING, str(exc))
                self._stop.wait(self.config.watch.poll_s)
                continue
            self._set_state(OK)
            for path in ready:
                if self._stop.is_set():
                    break
                started, started_perf = time.time(), time.perf_counter()
                try:
                    frame = read_image(path)
                except ImageReadError as exc:
                    if watcher.changed_since_ready(path):
                        continue  # still being written after all: next poll
                    target = watcher.finish(path, ok=False)
                    log.warning("camera %s: %s; moved to %s", self.name, exc, target, extra={"camera": self.name})
                    self.stats.error(self.name, "frame")
                    continue
                ok = self._inspect(frame, path.name, None, started, started_perf)
                watcher.finish(path, ok=ok)
            self._stop.wait(self.config.watch.poll_s)
