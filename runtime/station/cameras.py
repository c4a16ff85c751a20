"""Frame sources for continuous and trigger cameras: OpenCV captures and an image-folder replay.

Two kinds of failure are kept apart: :class:`FrameError` is one bad frame (skip it, count it),
:class:`SourceError` is a camera that is gone (close it, reopen it with back-off).
The replay source stands in for a camera on a test bench, in CI and in the benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.image_io import ImageReadError, list_images, read_image, to_rgb8
from runtime.station.config import SourceConfig


class SourceError(RuntimeError):
    """The source cannot deliver frames at all (unplugged camera, dropped stream, missing folder)."""


class FrameError(ValueError):
    """One frame could not be decoded; the next one may be fine."""


class FrameSource(Protocol):
    def read(self) -> tuple[np.ndarray, str]:
        """The next frame (RGB uint8) and a label saying where it came from."""
        ...

    def close(self) -> None: ...


class CaptureSource:
    """A USB/CSI camera, an RTSP/HTTP stream or a video file, through ``cv2.VideoCapture``."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.target: int | str = config.device if config.kind == "camera" else (
            config.url if config.kind == "stream" else str(config.path))
        self.index = 0
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        if self.config.kind == "video" and not Path(self.target).is_file():
            raise SourceError(f"{self.target}: video file not found")
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.config.kind} {self.target}: cannot open")
        return capture

    def read(self) -> tuple[np.ndarray, str]:
        ok, frame = self._capture.read()
        if not ok and self.config.kind == "video" and self.config.loop and self.index > 0:
            self._capture.release()
            self._capture = self._open()
            ok, frame = self._capture.read()
        if not ok:
            raise SourceError(f"{self.config.kind} {self.target}: no frame (disconnected or ended)")
        self.index += 1
        try:
            return to_rgb8(frame, "BGR"), f"{self.target}#{self.index}"
        except ValueError as exc:
            raise FrameError(f"{self.target} frame {self.index}: {exc}") from None

    def close(self) -> None:
        self._capture.release()


class ReplaySource:
    """Images of a folder in name order, as if a camera shot them; the folder is re-listed each lap."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.folder = Path(config.path)
        self._queue: list[Path] = []
        self._laps = 0
        self._refill()

    def _refill(self) -> None:
        if self._laps and not self.config.loop:
            raise SourceError(f"{self.folder}: every image replayed (loop is off)")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self._queue = list_images(self.folder)
        if not self._queue:
            raise SourceError(f"{self.folder}: no images to replay")
        self._laps += 1

    def read(self) -> tuple[np.ndarray, str]:
        if not self._queue:
            self._refill()
        path = self._queue.pop(0)
        try:
            return read_image(path), str(path)
        except ImageReadError as exc:
            if not self.folder.is_dir():
                raise SourceError(f"{self.folder}: image folder disappeared") from None
            raise FrameError(str(exc)) from None

    def close(self) -> None:
        self._queue = []


def open_source(config: SourceConfig) -> FrameSource:
    """Open the configured source; raises :class:`SourceError` if it is not there (yet)."""
    return ReplaySource(config) if config.kind == "images" else CaptureSource(config)
