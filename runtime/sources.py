"""Where frames come from: image files, folders, glob patterns, video files, USB cameras and RTSP/HTTP streams.

Each frame arrives as RGB uint8 with the name of its source and its index, so a result can
always be traced back to the file (and frame) it came from. Video and live sources can drop
frames on purpose (``every_nth``, ``max_fps``); a live source that drops is reopened with
exponential back-off; an undecodable frame or file is skipped and counted, never fatal.
Every source keeps a :class:`SourceStatus` that a caller (the CLI summary, a daemon's
health check) can read while it runs.
"""

from __future__ import annotations

import glob
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.image_io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, to_rgb8

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STREAM_TIMEOUT_MS = 5000  # open and read timeouts for network streams: a hung camera must not hang us
MAX_CORRUPT_IN_A_ROW = 25  # a live source delivering only garbage is reopened
GRAB_RETRIES = 2  # a failed grab is retried before the stream counts as ended or dropped
LOGGED_PROBLEMS = 20  # skipped files/frames kept by name in the status and logged one by one ...
PROBLEM_LOG_EVERY_S = 60.0  # ... then one warning at most this often, counting those in between


class SourceError(ConnectionError):
    """A source that cannot deliver frames any more (gave up reconnecting); the message names it."""


@dataclass
class Frame:
    source: str
    index: int  # frame number in a video or stream (counting skipped frames); 0 for a still image
    image: np.ndarray  # RGB uint8
    fps: float | None = None  # set for videos and live sources, whose overlays are written as video
    camera_frame: dict | None = None  # an industrial camera's own frame id and timestamp (runtime.genicam)


@dataclass
class SourceStatus:
    """What one source is doing: state, counts, and the last problem.

    ``state`` goes idle -> open -> (reconnecting -> open)* -> ended | failed.
    """

    source: str
    state: str = "idle"
    frames: int = 0  # delivered
    skipped: int = 0  # dropped on purpose by every_nth / max_fps
    corrupt: int = 0  # undecodable frames or files, skipped
    reconnects: int = 0  # successful reopenings after a drop
    failed_opens: int = 0
    last_error: str | None = None
    retry_in_s: float | None = None
    problems: list[str] = field(default_factory=list)  # the first few skipped files/frames, by name
    # the log's own bookkeeping: not an argument, not shown, not reported
    _unlogged: int = field(default=0, init=False, repr=False)  # skipped since the last warning
    _logged_at: float = field(default=0.0, init=False, repr=False)  # time.monotonic() of the last warning

    def skip_corrupt(self, message: str) -> None:
        """Count a skipped file or frame; log it, but a link that loses every frame at 30 fps not 30 times a second."""
        self.corrupt += 1
        self.last_error = message
        if len(self.problems) < LOGGED_PROBLEMS:
            self.problems.append(message)
        now = time.monotonic()
        if self.corrupt > LOGGED_PROBLEMS and now - self._logged_at < PROBLEM_LOG_EVERY_S:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more skipped since the last warning)" if self._unlogged else ""
        log.warning("skipping %s%s", message, since)
        self._unlogged, self._logged_at = 0, now

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if not key.startswith("_")}


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to (re)open a source or reconnect: ``min_s`` doubling up to ``max_s``.

    ``attempts`` is how many failed opens in a row are tolerated (None: retry for ever). The
    station's config validates it as it is (``reopen:``, ``mqtt.reconnect:``), so there is one back-off.
    """

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic when a station config holds one

    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.min_s <= 0 or self.factor < 1:
            raise ValueError(f"min_s must be > 0 and factor >= 1, got {self.min_s} and {self.factor}")
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) is below min_s ({self.min_s})")

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.min_s * self.factor ** attempt)


class FrameRate:
    """Which frames to keep: every ``every_nth`` one, and at most ``max_fps`` per second of the
    source's own clock (the file's timestamps for a video, the wall clock for a live source)."""

    def __init__(self, every_nth: int = 1, max_fps: float | None = None) -> None:
        if every_nth < 1:
            raise ValueError(f"every_nth must be >= 1, got {every_nth}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.every_nth = every_nth
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self.next_due = float("-inf")

    def keep(self, index: int, timestamp_s: float) -> bool:
        if index % self.every_nth:
            return False
        if not self.interval:
            return True
        if timestamp_s + 1e-9 < self.next_due:
            return False
        # Advance from the due time, not the frame time, so the rate holds on average; resync after a gap.
        on_time = timestamp_s - self.next_due < self.interval
        self.next_due = (self.next_due if on_time else timestamp_s) + self.interval
        return True


class WallClockPace:
    """At most one frame per ``interval`` seconds of real time, for a file replayed as a camera would serve it
    (a video or a folder in the station: ``rate_hz`` means per second of the wall clock, however fast the
    file can be read). A frame that comes late is not made up for by a burst of early ones. One pace can
    outlive its source, so a looping video that is reopened at its end keeps the rate across the seam."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next_due = time.monotonic()

    def wait(self, stop: threading.Event, min_interval: float = 0.0) -> None:
        """Until the next frame is due, or ``stop`` is set; ``min_interval`` raises the interval (a video's
        own frame time). Without either interval it never waits."""
        interval = max(self.interval, min_interval)
        if not interval:
            return
        stop.wait(max(0.0, self._next_due - time.monotonic()))
        self._next_due = max(self._next_due + interval, time.monotonic())


class Source(Protocol):
    """A frame source a caller pulls from one frame at a time (a station's camera): what it is, how its frames
    end, and what it is doing. ``read`` raises :class:`SourceError` when the source is gone or ended (the caller
    closes it and, unless it ``ends``, opens it again with back-off) and ``ImageReadError`` for one bad frame."""

    kind: str  # "images", "video", "camera", "stream", "genicam": the station config's ``source.kind``
    compressed: bool  # frames come through a video codec: the capture check expects its artefacts
    ends: bool  # a file replayed once: its SourceError is the end, not a camera to reopen
    restarts_at_end: bool  # a looping video: opened again at once at its end, without a back-off
    status: SourceStatus

    def read(self) -> Frame: ...

    def close(self) -> None: ...


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream(item: str) -> bool:
    return item.lower().startswith(STREAM_SCHEMES)


def is_camera(item: str) -> bool:
    """A USB camera index: ``0``, ``1``, ... (when no file of that name exists)."""
    return re.fullmatch(r"\d{1,3}", item) is not None and not Path(item).exists()


def redact(url: str) -> str:
    """A stream URL without its password, for logs and results."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


class CaptureSource:
    """A video file, a USB camera (index) or a network stream (RTSP/HTTP URL), through ``cv2.VideoCapture``.

    A live source (camera or stream) that cannot be opened, or stops delivering, is reopened
    after :class:`Backoff` delays; a video file ends at its last frame. :meth:`close` from
    another thread also ends a back-off wait at once.

    ``pace`` (a video file standing in for a camera, in the station): the kept frames also wait
    for it, so they come at most at its rate and never faster than the video's own frame rate;
    without it a file is read as fast as its frames are asked for. ``loop``: such a video is opened
    again at its end by its owner (a :class:`Source` that ``restarts_at_end``).
    """

    def __init__(self, target: int | str | Path, *, every_nth: int = 1, max_fps: float | None = None,
                 backoff: Backoff | None = None, pace: WallClockPace | None = None, loop: bool = False) -> None:
        self.target = target
        self.live = isinstance(target, int) or is_stream(str(target))
        self.kind = "camera" if isinstance(target, int) else "stream" if self.live else "video"
        self.compressed = self.kind != "camera"
        self.ends = self.kind == "video" and not loop
        self.restarts_at_end = self.kind == "video" and loop
        self.name = f"camera:{target}" if isinstance(target, int) else (
            redact(target) if self.live else str(target))
        self.rate = FrameRate(every_nth, max_fps)
        self.backoff = backoff or Backoff()
        self.status = SourceStatus(self.name)
        self._index = 0
        self._stop = threading.Event()
        self._frames: Iterator[Frame] | None = None
        self._pace = pace if not self.live else None

    @property
    def _closed(self) -> bool:
        return self._stop.is_set()

    def read(self) -> Frame:
        """The next frame, for a caller that pulls one at a time (a station serving triggers).

        Raises :class:`SourceError` when the source ended, or gave up reopening.
        """
        if self._frames is None:
            self._frames = iter(self)
        try:
            return next(self._frames)
        except StopIteration:
            raise SourceError(f"{self.name}: no more frames ({self.status.last_error or 'ended'})") from None
        except ImageReadError as exc:
            raise SourceError(str(exc)) from None

    def close(self) -> None:
        """Stop after the current frame (safe to call from another thread)."""
        self._stop.set()

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.target, int):
            capture = cv2.VideoCapture(self.target)
        elif self.live:
            capture = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        else:
            capture = cv2.VideoCapture(str(self.target))
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def __iter__(self) -> Iterator[Frame]:
        try:
            failures = 0  # failed opens in a row
            opened_before = False
            while not self._closed:
                capture = self._open()
                if capture is None:
                    if not self.live:
                        self.status.state = "failed"
                        raise ImageReadError(f"{self.name}: cannot open as video")
                    failures += 1
                    self.status.failed_opens += 1
                    self.status.last_error = f"{self.name}: cannot open"
                    if self.backoff.attempts is not None and failures > self.backoff.attempts:
                        self.status.state = "failed"
                        raise SourceError(f"{self.name}: cannot open after {failures} attempts; giving up")
                    delay = self.backoff.delay(failures - 1)
                    self.status.state, self.status.retry_in_s = "reconnecting", delay
                    log.warning("%s: cannot open; retrying in %.1f s", self.name, delay)
                    self._stop.wait(delay)
                    continue
                if opened_before:
                    self.status.reconnects += 1
                    log.info("%s: reopened", self.name)
                opened_before = True
                self.status.state, self.status.retry_in_s = "open", None
                try:
                    for frame in self._read(capture):
                        failures = 0
                        yield frame
                finally:
                    capture.release()
                if not self.live or self._closed:
                    break
                self.status.last_error = f"{self.name}: stream dropped"
                log.warning("%s: stream dropped; reopening", self.name)
        finally:  # also when the caller stops early
            if self.status.state != "failed":
                self.status.state = "ended"

    def _grab(self, capture: cv2.VideoCapture) -> bool:
        """Advance to the next frame. A frame FFmpeg cannot decode fails ``grab`` like the end of
        the stream does; if a retry succeeds, the failed frame is counted as corrupt and skipped."""
        if capture.grab():
            return True
        for _ in range(GRAB_RETRIES):
            if self._closed:
                return False
            if capture.grab():
                self.status.skip_corrupt(f"{self.name} frame {self._index}: could not be decoded")
                self._index += 1
                return True
        return False

    def _read(self, capture: cv2.VideoCapture) -> Iterator[Frame]:
        """Frames until the capture ends or drops; skipped frames are grabbed but not decoded.

        Frame numbers continue across reopenings of a live source.
        """
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and 0 < fps < 1000 else 25.0
        corrupt_in_a_row = 0
        while not self._closed and self._grab(capture):
            index = self._index
            self._index += 1
            if not self.rate.keep(index, time.monotonic() if self.live else index / fps):
                self.status.skipped += 1
                continue
            ok, raw = capture.retrieve()
            try:
                if not ok or raw is None:
                    raise ValueError("could not be decoded")
                image = to_rgb8(raw, "BGR")
            except ValueError as exc:
                self.status.skip_corrupt(f"{self.name} frame {index}: {exc}")
                corrupt_in_a_row += 1
                if self.live and corrupt_in_a_row >= MAX_CORRUPT_IN_A_ROW:
                    return
                continue
            corrupt_in_a_row = 0
            if self._pace is not None:
                self._pace.wait(self._stop, 1.0 / fps)
                if self._closed:
                    return
            self.status.frames += 1
            yield Frame(self.name, index, image, fps)


class ImageFiles:
    """Still images as single frames; an unreadable one is skipped and counted."""

    def __init__(self, name: str, paths: list[Path]) -> None:
        self.paths = paths
        self.status = SourceStatus(name)
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __iter__(self) -> Iterator[Frame]:
        self.status.state = "open"
        for path in self.paths:
            if self._closed:
                break
            try:
                image = read_image(path)
            except ImageReadError as exc:
                self.status.skip_corrupt(str(exc))
                continue
            self.status.frames += 1
            yield Frame(str(path), 0, image)
        self.status.state = "ended"


class FolderReplay:
    """A folder's images in name order, served as a camera would serve frames: for test benches, CI and
    benchmarks. The folder is listed again at each lap (``loop``); ``fps`` paces delivery by the wall clock.

    :meth:`read` raises :class:`ImageReadError` for an undecodable file (that one frame is bad)
    and :class:`SourceError` when the folder is gone or empty (the camera is gone).
    """

    kind = "images"
    compressed = False
    restarts_at_end = False  # it loops by itself

    def __init__(self, folder: str | Path, loop: bool = True, every_nth: int = 1, fps: float | None = None) -> None:
        self.folder = Path(folder)
        self.name = str(self.folder)
        self.loop = loop
        self.ends = not loop
        self.every_nth = every_nth
        self.status = SourceStatus(self.name)
        self._queue: list[Path] = []
        self._laps = 0
        self._read = 0
        self._stop = threading.Event()
        self._pace = WallClockPace(1.0 / fps if fps else 0.0)
        self._refill()

    def _refill(self) -> None:
        if self._laps and not self.loop:
            self.status.state = "ended"
            raise SourceError(f"{self.folder}: every image replayed (loop is off)")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self._queue = list_images(self.folder)
        if not self._queue:
            raise SourceError(f"{self.folder}: no images to replay")
        self._laps += 1
        self.status.state = "open"

    def read(self) -> Frame:
        while True:
            if not self._queue:
                self._refill()
            path = self._queue.pop(0)
            self._read += 1
            if (self._read - 1) % self.every_nth == 0:
                break
            self.status.skipped += 1
        self._pace.wait(self._stop)
        try:
            image = read_image(path)
        except ImageReadError as exc:
            if not self.folder.is_dir():
                raise SourceError(f"{self.folder}: image folder disappeared") from None
            self.status.skip_corrupt(str(exc))
            raise
        self.status.frames += 1
        return Frame(str(path), 0, image)

    def close(self) -> None:
        self._stop.set()
        self._queue = []


def expand_input(item: str) -> list[Path]:
    """Files named by one input: the file, a folder's images, or a glob's matches, in order."""
    path = Path(item)
    if path.is_dir():
        found = list_images(path)
        if not found:
            raise FileNotFoundError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(item):
        matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
        if not matches:
            raise FileNotFoundError(f"{item}: pattern matches no file")
        return matches
    raise FileNotFoundError(f"{item}: no such file or folder (nor a camera index or rtsp/http URL)")


class InputFrames:
    """Every frame named by CLI-style inputs, in order: image files, folders, globs, video files,
    camera indexes and stream URLs. ``statuses`` holds one :class:`SourceStatus` per source.

    Inputs are checked when this is built (a missing file fails before any inference).
    ``every_nth`` and ``max_fps`` apply to videos, cameras and streams.
    """

    def __init__(self, inputs: list[str], every_nth: int = 1, max_fps: float | None = None,
                 backoff: Backoff | None = None) -> None:
        FrameRate(every_nth, max_fps)  # validates both before anything opens
        self.sources: list[CaptureSource | ImageFiles] = []
        for item in inputs:
            if is_camera(item) or is_stream(item):
                target = int(item) if is_camera(item) else item
                self.sources.append(CaptureSource(target, every_nth=every_nth, max_fps=max_fps, backoff=backoff))
                continue
            images: list[Path] = []
            for path in expand_input(item):
                if is_video(path):
                    if images:
                        self.sources.append(ImageFiles(item, images))
                        images = []
                    self.sources.append(CaptureSource(path, every_nth=every_nth, max_fps=max_fps))
                else:
                    images.append(path)
            if images:
                self.sources.append(ImageFiles(item, images))

    @property
    def statuses(self) -> list[SourceStatus]:
        return [source.status for source in self.sources]

    @property
    def live(self) -> bool:
        """Whether any source is a camera or stream (frames keep coming; drop rather than queue)."""
        return any(isinstance(source, CaptureSource) and source.live for source in self.sources)

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def __iter__(self) -> Iterator[Frame]:
        for source in self.sources:
            yield from source
