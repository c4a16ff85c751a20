"""Where frames come from: image files, folders, glob patterns and video files.

Each frame arrives as RGB uint8 with the name of its source and its index, so a result can
always be traced back to the file (and frame) it came from.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.image_io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, to_rgb8

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")


@dataclass
class Frame:
    source: str
    index: int  # frame number in a video; 0 for a still image
    image: np.ndarray  # RGB uint8


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files named by the user: files as given, folders' images, glob matches, in order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"{item}: pattern matches no file")
            files.extend(matches)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def video_frames(path: str | Path) -> Iterator[Frame]:
    """Decoded frames of a video file; raises if the file cannot be opened as video."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"{path}: cannot open as video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Frame(str(path), index, to_rgb8(frame, "BGR"))
            index += 1
    finally:
        capture.release()


def video_fps(path: str | Path, default: float = 25.0) -> float:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return fps if fps and fps > 0 else default


def file_frames(path: Path) -> Iterator[Frame]:
    """Frames of one file: a video's frames, or an image as a single frame.

    An unreadable image is logged by name and skipped rather than stopping a folder run.
    """
    if is_video(path):
        yield from video_frames(path)
        return
    try:
        yield Frame(str(path), 0, read_image(path))
    except ImageReadError as exc:
        log.warning("skipping %s", exc)
