"""One thread per camera: continuous frames, PLC triggers or a watched folder, into the inspector.

Nothing a camera does stops the station: a bad frame is counted and skipped, a camera that goes
away is closed and reopened with back-off (its state shows in the status message), an unexpected
error is logged and the camera restarted after a back-off, and a trigger that cannot be served
is answered on ``cmd/error`` with its ``part_id``. Frames come from :mod:`runtime.sources`
(one capture, one back-off, one redaction of stream credentials).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from runtime.image_io import ImageReadError, read_image
from runtime.sources import Backoff, CaptureSource, FolderReplay, Frame, Source, SourceError, WallClockPace
from runtime.station.config import CameraConfig, SourceConfig
from runtime.station.inspection import Inspector, Shot
from runtime.station.stats import StationStats
from runtime.station.watch import FolderWatcher

log = logging.getLogger(__name__)

STARTING, OK, RECONNECTING, ENDED, FAILED, STOPPED = "starting", "ok", "reconnecting", "ended", "failed", "stopped"
SHUTTING_DOWN = "shutting down"


@dataclass(frozen=True)
class Trigger:
    part_id: str
    received: float  # epoch seconds
    received_perf: float  # time.perf_counter() at arrival, for latency
    row: int | None = None  # the outbox's record of the accepted trigger, deleted with its answer


def open_source(settings: SourceConfig, every_nth: int = 1, rate_hz: float | None = None,
                pace: WallClockPace | None = None) -> Source:
    """The camera's frame source; a failed open raises SourceError at once (the worker backs off).

    Files stand in for a camera: a folder is replayed at ``rate_hz`` a second of real time, a video at its
    own frame rate, at most ``rate_hz``, by ``pace`` (default: one of its own; a worker passes the same
    pace to each reopening of a looping video, so the rate holds across the seam)."""
    return OPENERS[settings.kind](settings, every_nth, rate_hz, pace)


def _open_folder(settings: SourceConfig, every_nth: int, rate_hz: float | None, pace: WallClockPace | None) -> Source:
    return FolderReplay(settings.path, loop=settings.loop, every_nth=every_nth, fps=rate_hz)


def _open_genicam(settings: SourceConfig, every_nth: int, rate_hz: float | None, pace: WallClockPace | None) -> Source:
    from runtime.genicam import GenicamSource  # Aravis is optional: imported only for a GenICam camera

    return GenicamSource(settings.genicam, every_nth=every_nth, max_fps=rate_hz)


def _open_video(settings: SourceConfig, every_nth: int, rate_hz: float | None, pace: WallClockPace | None) -> Source:
    if not settings.path.is_file():
        raise SourceError(f"{settings.path}: video file not found")
    return CaptureSource(settings.path, every_nth=every_nth, max_fps=rate_hz, backoff=_opened_once(settings),
                         pace=pace or WallClockPace(1.0 / rate_hz if rate_hz else 0.0), loop=settings.loop)


def _open_camera(settings: SourceConfig, every_nth: int, rate_hz: float | None, pace: WallClockPace | None) -> Source:
    return CaptureSource(settings.device, every_nth=every_nth, max_fps=rate_hz, backoff=_opened_once(settings))


def _open_stream(settings: SourceConfig, every_nth: int, rate_hz: float | None, pace: WallClockPace | None) -> Source:
    return CaptureSource(settings.url, every_nth=every_nth, max_fps=rate_hz, backoff=_opened_once(settings))


def _opened_once(settings: SourceConfig) -> Backoff:
    """The camera's back-off with no reopening of the source's own (``attempts=0``): a failed open raises at
    once, and the worker backs off and opens it again."""
    return dataclasses.replace(settings.reopen, attempts=0)


OPENERS = {"images": _open_folder, "genicam": _open_genicam, "video": _open_video, "camera": _open_camera,
           "stream": _open_stream}  # SourceConfig.kind -> how that source is opened


class CameraWorker:
    def __init__(self, config: CameraConfig, inspector: Inspector, stats: StationStats,
                 on_state: Callable[[], None], on_trigger_error: Callable[[Trigger, str, str], None]) -> None:
        self.config = config
        self.inspector = inspector
        self.stats = stats
        self.state = STARTING
        self.error: str | None = None
        self.failures = 0  # unexpected errors, each followed by a restart of the camera loop
        self.beat = time.monotonic()  # last sign of life, for the supervisor
        self.busy_since: float | None = None  # inside one inspection (may legitimately take a while)
        self._on_state = on_state
        self._on_trigger_error = on_trigger_error
        self._triggers: queue.Queue[Trigger] = queue.Queue(maxsize=config.trigger_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{config.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the frame in hand, answer the triggers still waiting, then end the thread."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def trigger(self, trigger: Trigger) -> bool:
        """Queue a trigger; False when the queue is full (the caller answers 'busy')."""
        if self._stop.is_set():
            return False
        try:
            self._triggers.put_nowait(trigger)
        except queue.Full:
            return False
        return True

    @property
    def waiting(self) -> int:
        return self._triggers.qsize()

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
        """The camera loop, restarted after an unexpected error (a bug, not bad input) with back-off."""
        backoff = self.config.source.reopen if self.config.source is not None else None
        while not self._stop.is_set():
            try:
                if self.config.mode == "folder":
                    self._run_folder()
                else:
                    self._run_source()
                break
            except Exception as exc:
                self.failures += 1
                log.exception("camera %s failed on an unexpected error; restarting it", self.name,
                              extra={"camera": self.name})
                self._set_state(FAILED, f"{type(exc).__name__}: {str(exc)[:200]}")
                self._reject_triggers(f"camera {self.name} failed: {type(exc).__name__}")
                delay = backoff.delay(min(self.failures - 1, 10)) if backoff else 1.0
                self._stop.wait(delay)
        self._reject_triggers(f"camera {self.name} is {SHUTTING_DOWN}")
        if self.state != ENDED:
            self._set_state(STOPPED)

    def _inspect(self, shot: Shot) -> bool:
        self.busy_since = time.monotonic()
        try:
            self.inspector.inspect(shot)
            return True
        except Exception as exc:
            log.error("camera %s: inspection of %s failed: %s", self.name, shot.source, exc,
                      extra={"camera": self.name, "part_id": shot.part_id})
            self.stats.error(self.name, "inspection")
            return False
        finally:
            self.busy_since = None
            self.beat = time.monotonic()

    def _run_source(self) -> None:
        settings = self.config.source
        continuous = self.config.mode == "continuous"
        source = None
        opened: Source | None = None  # the last source opened, still asked how it ends once closed
        rate_hz = self.config.rate_hz if continuous else None
        pace = WallClockPace(1.0 / rate_hz if rate_hz else 0.0)  # one for every reopening of a looping video
        failures = 0  # in a row: the back-off grows with them
        while not self._stop.is_set():
            self.beat = time.monotonic()
            try:
                if source is None:
                    source = opened = open_source(settings, self.config.every_nth if continuous else 1, rate_hz,
                                                  pace)
                    self._set_state(OK)
                if continuous:
                    self._continuous_step(source)
                else:
                    self._serve_trigger(source)
                failures = 0
            except SourceError as exc:
                if source is not None:
                    source.close()
                    source = None
                if opened is not None and opened.ends and self.state == OK:
                    self._set_state(ENDED, str(exc))
                    break
                if opened is not None and opened.restarts_at_end and self.state == OK and not failures:
                    failures += 1
                    continue  # a looping video starts again at once
                self._set_state(RECONNECTING, str(exc))
                self._reject_triggers(f"camera {self.name} is unavailable: {exc}")
                self._stop.wait(settings.reopen.delay(min(failures, 10)))
                failures += 1
        if source is not None:
            source.close()

    def _read(self, source: Source) -> Frame:
        """The source's next frame; the frames it skipped as broken on the way (a GenICam camera's incomplete ones,
        a stream's undecodable ones) are counted for the camera."""
        before = source.status.corrupt
        try:
            return source.read()
        finally:
            self.stats.corrupt_frames(self.name, source.status.corrupt - before)

    def _continuous_step(self, source: Source) -> None:
        try:
            frame = self._read(source)
        except ImageReadError as exc:
            log.warning("camera %s: %s", self.name, exc, extra={"camera": self.name})
            self.stats.error(self.name, "frame")
            return
        # dated once the frame is in hand: waiting for the next frame (rate_hz, the camera's own pace) is no latency
        started, started_perf = time.time(), time.perf_counter()
        self._inspect(Shot(frame.image, _label(frame), started, started_perf, camera_frame=frame.camera_frame,
                           compressed=source.compressed))

    def _serve_trigger(self, source: Source) -> None:
        try:
            trigger = self._triggers.get(timeout=0.2)
        except queue.Empty:
            return
        try:
            frame = self._read(source)
        except ImageReadError as exc:
            self.stats.error(self.name, "frame")
            self._on_trigger_error(trigger, self.name, f"bad frame: {exc}")
            return
        except SourceError as exc:
            self.stats.error(self.name, "camera")
            self._on_trigger_error(trigger, self.name, f"camera {self.name} lost: {exc}")
            raise
        except Exception as exc:  # a source's unexpected error restarts the camera, but the trigger is answered
            self.stats.error(self.name, "camera")
            self._on_trigger_error(trigger, self.name, f"camera {self.name} failed: {type(exc).__name__}: {exc}")
            raise
        if not self._inspect(Shot(frame.image, _label(frame), trigger.received, trigger.received_perf, trigger.part_id,
                                  trigger.row, frame.camera_frame, source.compressed)):
            self._on_trigger_error(trigger, self.name, "inspection failed (see the station log)")

    def _reject_triggers(self, reason: str) -> None:
        while True:
            try:
                trigger = self._triggers.get_nowait()
            except queue.Empty:
                return
            self.stats.error(self.name, "camera")
            self._on_trigger_error(trigger, self.name, reason)

    def _run_folder(self) -> None:
        watcher = FolderWatcher(self.config.watch)
        while not self._stop.is_set():
            self.beat = time.monotonic()
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
                    frame = read_image(path, self.config.max_image_pixels)
                except ImageReadError as exc:
                    if watcher.changed_since_ready(path):
                        continue  # still being written after all: next poll
                    target = watcher.finish(path, ok=False, reason=str(exc))
                    log.warning("camera %s: %s; moved to %s", self.name, exc, target, extra={"camera": self.name})
                    self.stats.error(self.name, "frame")
                    continue
                ok = self._inspect(Shot(frame, path.name, started, started_perf))
                watcher.finish(path, ok=ok, reason=None if ok else "inspection failed (see the station log)")
            self._stop.wait(self.config.watch.poll_s)


def _label(frame: Frame) -> str:
    """Where a frame came from: a replayed file's path, or the (credential-free) source name and frame index."""
    return frame.source if frame.index == 0 and not frame.fps else f"{frame.source}#{frame.index + 1}"
