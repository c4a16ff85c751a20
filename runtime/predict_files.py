"""Running a detector over files and streams: one JSON line per image or video frame, plus overlays.

Works with anything that has ``predict(frames) -> list[Result]``: the PyTorch model on a
workstation or an exported bundle on an edge box.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.capture_check import CaptureCheck
from runtime.image_io import write_image
from runtime.manifest import CaptureSection
from runtime.pipeline import Pipeline
from runtime.result import Result
from runtime.scoring import Scoring
from runtime.sources import Backoff, Frame, ImageFiles, InputFrames, SourceStatus
from runtime.visualize import annotate


class Predictor(Protocol):
    scoring: Scoring
    capture_profile: CaptureSection | None  # what the model was trained on, compared with each source

    def predict(self, frames: list[np.ndarray]) -> list[Result]: ...


def _file_stem(source: str) -> str:
    """A file-name stem for a source: a file's stem, or a cleaned-up camera name or URL."""
    if re.match(r"^[a-z]+:", source):  # camera:0, rtsp://..., http://...
        return re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_")[-60:] or "stream"
    return Path(source).stem


def _image_stem(source: str) -> str:
    """An image's overlay stem with its folder (good/000.png -> good_000), so folders of same-named files stay apart."""
    path = Path(source)
    return f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem


class _OverlayWriter:
    """Writes overlays: a PNG per image, an MP4 per video or stream; names never collide."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[str] = set()
        self.videos: dict[str, tuple[cv2.VideoWriter, Path]] = {}

    def _unique(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 1
        while candidate in self.used:
            candidate, n = f"{stem}_{n}{suffix}", n + 1
        self.used.add(candidate)
        return self.out_dir / candidate

    def write(self, frame: Frame, picture: np.ndarray, fps: float | None) -> str:
        """Save ``picture`` for ``frame``; ``fps`` (None for a still image) is the overlay video's rate."""
        if fps is None:
            path = self._unique(f"{_image_stem(frame.source)}.png")
            write_image(path, picture)
            return str(path)
        if frame.source not in self.videos:
            path = self._unique(f"{_file_stem(frame.source)}_overlay.mp4")
            height, width = picture.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise OSError(f"{path}: cannot open video writer")
            self.videos[frame.source] = writer, path
        writer, path = self.videos[frame.source]
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        return str(path)

    def close(self) -> None:
        for writer, _ in self.videos.values():
            writer.release()


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sequential(predictor: Predictor, frames: Iterator[Frame], batch_size: int) -> Iterator[tuple[Frame, Result]]:
    for batch in _batches(frames, batch_size):
        yield from zip(batch, predictor.predict([f.image for f in batch]), strict=True)


@dataclass
class PredictionRun:
    """What a run did: frame counts and each source's status (skipped, corrupt, reconnects)."""

    frames: int = 0
    anomalous: int = 0
    dropped: int = 0  # live frames dropped because inference fell behind (pipelined mode)
    sources: list[SourceStatus] = field(default_factory=list)
    capture_warnings: dict[str, str] = field(default_factory=dict)  # source -> how it differs from training

    @property
    def corrupt(self) -> list[str]:
        return [problem for status in self.sources for problem in status.problems]


def known_frame_count(frames: InputFrames) -> int | None:
    """How many frames the inputs hold, when that is known before reading: still images only."""
    if not all(isinstance(source, ImageFiles) for source in frames.sources):
        return None
    return sum(len(source.paths) for source in frames.sources)


def predict_files(detector: Predictor, inputs: list[str], out_dir: str | Path | None = None,
                  batch_size: int = 1, on_frame: Callable[[dict], None] | None = None, *, every_nth: int = 1,
                  max_fps: float | None = None, pipelined: bool = False, max_frames: int | None = None,
                  backoff: Backoff | None = None,
                  on_start: Callable[[int | None], None] | None = None) -> PredictionRun:
    """Predict every frame of ``inputs``: image files, folders, globs, videos, camera indexes, stream URLs.

    Each frame's row (source, frame, verdict, overlay) goes to ``on_frame``; with ``out_dir``
    also to ``predictions.jsonl``, with the overlays beside it. ``pipelined`` overlaps decoding,
    preprocessing and inference (bundles only); ``max_frames`` stops a never-ending stream.
    ``on_start`` is told how many frames will come (None when not known beforehand: videos, streams).
    """
    frames = InputFrames(inputs, every_nth=every_nth, max_fps=max_fps, backoff=backoff)
    if on_start is not None:
        total = known_frame_count(frames)
        on_start(total if max_frames is None or total is None else min(total, max_frames))
    if pipelined and not hasattr(detector, "prepare"):
        raise ValueError("pipelined prediction needs an exported bundle (a model folder runs sequentially)")
    run = PredictionRun(sources=frames.statuses)
    capture_check = CaptureCheck(detector.capture_profile, detector.scoring)
    run.capture_warnings = capture_check.warnings
    writer = lines = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _OverlayWriter(out_dir)
        lines = open(out_dir / "predictions.jsonl", "w")
    pipeline = Pipeline(detector, drop_when_full=frames.live) if pipelined else None
    results = pipeline.run(frames) if pipeline else _sequential(detector, iter(frames), batch_size)
    try:
        for frame, result in results:
            row = {"source": frame.source, "frame": frame.index, **result.to_dict()}
            capture_check.observe(frame.source, frame.fps is not None, frame.image.shape[:2], result.capture_stats)
            if writer is not None:
                fps = None if frame.fps is None else min(frame.fps / every_nth, max_fps or float("inf"))
                row["overlay"] = writer.write(frame, annotate(frame.image, result), fps)
                lines.write(json.dumps(row) + "\n")
            run.frames += 1
            run.anomalous += result.is_anomalous
            if on_frame is not None:
                on_frame(row)
            if max_frames is not None and run.frames >= max_frames:
                break
    finally:
        results.close()
        frames.close()
        if writer is not None:
            writer.close()
            lines.close()
    run.dropped = pipeline.dropped if pipeline else 0
    return run
