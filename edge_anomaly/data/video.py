"""Training frames from video files, and writing frames back as a video.

A model fitted on PNG stills can flag every frame of the line's own camera (codec artefacts
read as defects), so ``fit`` also learns from frames of the camera's videos. Reading goes
through the runtime's :class:`runtime.sources.CaptureSource`, the same reader ``predict`` and
the station use, so a frame is decoded the same way at fit and at inspection time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.image_io import ImageReadError
from runtime.sources import VIDEO_SUFFIXES, CaptureSource, is_video

__all__ = ["VIDEO_SUFFIXES", "is_video", "sample_video_frames", "write_video", "MAX_FRAME_PIXELS",
           "MAX_SAMPLED_BYTES"]

log = logging.getLogger(__name__)

MAX_FRAME_PIXELS = 8192 * 8192  # an 8K frame is the largest a line camera plausibly records
MAX_SAMPLED_BYTES = 4 << 30  # RGB bytes one call may hold: past this, ask for every_nth / max_frames


def _frame_size(path: Path) -> tuple[int, int, int]:
    """(width, height, frame count) from the container, read before any frame is decoded."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageReadError(f"{path}: cannot open as video (missing, corrupt or unsupported codec)")
        return (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()


def sample_video_frames(path: Path, every_nth: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """RGB uint8 frames of a video file: every ``every_nth`` one, at most ``max_frames``.

    Frames above MAX_FRAME_PIXELS are refused before decoding, and a call that would hold more
    than MAX_SAMPLED_BYTES fails naming the file rather than exhausting memory. Undecodable
    frames are skipped with a warning naming the file and frame index; a file that cannot be
    opened raises :class:`ImageReadError` naming it.
    """
    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    width, height, _ = _frame_size(path)
    if width * height > MAX_FRAME_PIXELS:
        raise ValueError(f"{path}: frames of {width}x{height} exceed the limit of {MAX_FRAME_PIXELS} pixels")
    source = CaptureSource(path, every_nth=every_nth)
    frames: list[np.ndarray] = []
    held = 0
    for frame in source:
        if frame.image.shape[0] * frame.image.shape[1] > MAX_FRAME_PIXELS:  # the container may have lied
            raise ValueError(f"{path} frame {frame.index}: {frame.image.shape[1]}x{frame.image.shape[0]} "
                             f"exceeds the limit of {MAX_FRAME_PIXELS} pixels")
        held += frame.image.nbytes
        if held > MAX_SAMPLED_BYTES:
            raise ValueError(f"{path}: more than {MAX_SAMPLED_BYTES >> 20} MiB of frames after {len(frames)} "
                             f"frames; sample fewer with every_nth or max_frames")
        frames.append(frame.image)
        if max_frames is not None and len(frames) >= max_frames:
            source.close()
    if source.status.corrupt:
        log.warning("%s: skipped %d undecodable frame(s)", path, source.status.corrupt)
    if not frames:
        raise ImageReadError(f"{path}: no decodable frame")
    return frames


def write_video(path: str | Path, frames_rgb: Sequence[np.ndarray] | np.ndarray, fps: float,
                codec: str = "mp4v") -> Path:
    """Write RGB uint8 frames (all one size) as a video file; raises naming the file on failure."""
    path = Path(path)
    if len(frames_rgb) == 0:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames_rgb[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {codec!r} video here")
    try:
        for index, frame in enumerate(frames_rgb):
            if frame.shape[:2] != (height, width) or frame.dtype != np.uint8 or frame.ndim != 3:
                raise ValueError(f"{path} frame {index}: expected {width}x{height} RGB uint8, "
                                 f"got shape {frame.shape} {frame.dtype}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
