"""The normal images a model learns from: image files and frames sampled from videos.

A training set is a folder (or an MVTec category root, whose ``train/good`` is used) of images
and videos, or a single video file. Frames from the line's own camera and codec teach the model
that its compression artefacts are normal. The model's input size is chosen here from the
images' aspect ratio, so nothing is squashed.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_anomaly.data.folders import crop_region, training_folder
from edge_anomaly.data.video import VIDEO_SUFFIXES, is_video, sample_video_frames
from runtime.bundle import sha256_file
from runtime.global_stats import CAPTURE_STATS, capture_statistics
from runtime.image_io import IMAGE_SUFFIXES, ImageReadError, read_image
from runtime.manifest import MIXED, STILLS, VIDEO, CaptureSection
from runtime.preprocess import frame_to_input
from runtime.roi import Region

log = logging.getLogger(__name__)

GRID = 32  # input sides are multiples of the backbone's largest stride
MIN_SIDE = 64
ASPECT_SAMPLE = 40  # images read to measure the aspect ratio


def input_size_for(aspect_wh: float, max_pixels: int) -> tuple[int, int]:
    """The largest (height, width) on a 32-px grid within ``max_pixels`` whose shape is closest to ``aspect_wh``."""
    best: tuple[float, float, tuple[int, int]] | None = None
    for height in range(MIN_SIDE, int(math.sqrt(max_pixels / min(aspect_wh, 1.0))) + GRID + 1, GRID):
        width = max(MIN_SIDE, round(height * aspect_wh / GRID) * GRID)
        if height * width > max_pixels:
            continue
        key = (height * width, -abs(math.log(width / height / aspect_wh)))
        if best is None or key > best[:2]:
            best = (*key, (height, width))
    if best is None:
        raise ValueError(f"max_input_pixels={max_pixels} is too small for a {MIN_SIDE}-px model input")
    return best[2]


@dataclass(frozen=True)
class TrainingSet:
    """Where the normal images come from; reading them is deferred so several sizes can be loaded."""

    folder: Path  # resolved: a model exported from another working folder still finds it
    sources: list[Path]
    every_nth: int = 1
    max_frames: int | None = None  # per video

    @classmethod
    def scan(cls, data: str | Path, every_nth: int = 1, max_frames: int | None = None) -> TrainingSet:
        data = Path(data).resolve()
        if every_nth < 1 or (max_frames is not None and max_frames < 1):
            raise ValueError(f"every_nth must be >= 1 and max_frames >= 1, got {every_nth} and {max_frames}")
        if data.is_file():
            if not is_video(data):
                raise ValueError(f"{data}: --data takes a folder of images/videos or a video file "
                                 f"({', '.join(VIDEO_SUFFIXES)})")
            return cls(data.parent, [data], every_nth, max_frames)
        folder = training_folder(data).resolve()
        sources = sorted(p for p in folder.rglob("*")
                         if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_video(p)))
        if not sources:
            raise ValueError(f"{folder}: no images or videos found (looked for "
                             f"{', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
        return cls(folder, sources, every_nth, max_frames)

    @property
    def has_video(self) -> bool:
        return any(is_video(p) for p in self.sources)

    def frames(self) -> list[tuple[str, np.ndarray]]:
        """(name, RGB frame) of every readable image and sampled video frame, in source order."""
        return list(self._iter_frames())

    def _iter_frames(self):
        for path in self.sources:
            if is_video(path):
                for index, frame in enumerate(sample_video_frames(path, self.every_nth, self.max_frames)):
                    yield f"{path.name}#{index * self.every_nth}", frame
                continue
            try:
                yield path.name, read_image(path)
            except ImageReadError as exc:
                log.warning("skipping %s", exc)

    def _sample_shapes(self) -> list[tuple[Path, tuple[int, int]]]:
        """(source, frame height and width) of a sample of the readable sources."""
        shapes = []
        step = max(1, len(self.sources) // ASPECT_SAMPLE)
        for path in self.sources[::step][:ASPECT_SAMPLE]:
            if is_video(path):
                frames = sample_video_frames(path, 1, 1)
                if frames:
                    shapes.append((path, frames[0].shape[:2]))
                continue
            try:
                shapes.append((path, read_image(path).shape[:2]))
            except ImageReadError:
                continue
        if not shapes:
            raise ValueError(f"{self.folder}: found no usable images (none could be read to measure their size)")
        return shapes

    def aspect_ratio(self, roi: Region | None, center_crop: float | None) -> float:
        """Median width/height of the inspected region over a sample of the images."""
        regions = [crop_region(shape, roi, center_crop, path) for path, shape in self._sample_shapes()]
        return float(np.median([width / height for _, _, width, height in regions]))

    def capture_profile(self, capture: np.ndarray) -> CaptureSection:
        """What these frames are, for the check on every source the model later sees; ``capture`` holds
        the capture statistics of the training frames."""
        videos = sum(is_video(p) for p in self.sources)
        source = STILLS if videos == 0 else VIDEO if videos == len(self.sources) else MIXED
        frame_hw = np.median(np.array([shape for _, shape in self._sample_shapes()]), axis=0)
        noise, blockiness = np.median(capture, axis=0) if len(capture) else (0.0, 1.0)
        return CaptureSection(source=source, suffixes=sorted({p.suffix.lower() for p in self.sources}),
                              frame_hw=(int(frame_hw[0]), int(frame_hw[1])), noise=float(noise),
                              blockiness=float(blockiness))

    def load(self, size_hw: tuple[int, int], roi: Region | None = None, center_crop: float | None = None,
             advance: Callable[[], None] | None = None) -> tuple[np.ndarray, list[str]]:
        """(uint8 NHWC model inputs, names), cropped and resized exactly as the runtime does."""
        images, _, names = self.load_with_capture(size_hw, roi, center_crop, advance)
        return images, names

    def load_with_capture(self, size_hw: tuple[int, int], roi: Region | None = None,
                          center_crop: float | None = None, advance: Callable[[], None] | None = None,
                          vary: Callable[[np.ndarray], np.ndarray] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(uint8 NHWC model inputs, each frame's capture statistics, names).

        ``vary`` changes each frame at its own resolution first, as a camera would (see
        :func:`edge_anomaly.data.capture.varied_copy`).
        """
        images, capture, names = [], [], []
        for name, frame in self._iter_frames():
            if vary is not None:
                frame = vary(frame)
            region = crop_region(frame.shape[:2], roi, center_crop, name)
            images.append(frame_to_input(frame, size_hw, region=region))
            capture.append(capture_statistics(frame, region))
            names.append(name)
            if advance is not None:
                advance()
        if not images:
            return np.zeros((0, *size_hw, 3), np.uint8), np.zeros((0, len(CAPTURE_STATS))), names
        return np.stack(images), np.stack(capture), names

    def fingerprint(self) -> str:
        """SHA-256 over the names and contents of the sources, order-independent."""
        digest = hashlib.sha256()
        for path in sorted(self.sources, key=lambda p: str(p.relative_to(self.folder))):
            digest.update(str(path.relative_to(self.folder)).encode())
            digest.update(bytes.fromhex(sha256_file(path)))
        return digest.hexdigest()
