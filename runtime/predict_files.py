"""Running a detector over files: one JSON line per image or video frame, plus overlays.

Works with anything that has ``predict(frames) -> list[Result]``: the PyTorch model on a
workstation or an exported bundle on an edge box.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.image_io import write_image
from runtime.result import Result
from runtime.sources import Frame, expand_inputs, file_frames, is_video, video_fps
from runtime.visualize import draw_regions, overlay_heatmap


class Predictor(Protocol):
    def predict(self, frames: list[np.ndarray]) -> list[Result]: ...


def annotate(frame: np.ndarray, result: Result) -> np.ndarray:
    """Heatmap overlay with the anomalous regions outlined and the verdict written on it."""
    picture = draw_regions(overlay_heatmap(frame, result.heatmap), result.heatmap)
    text = f"{result.label} {result.normalized_score:.2f}" + (f" ({result.kind})" if result.kind else "")
    colour = (255, 60, 60) if result.is_anomalous else (60, 220, 60)
    scale = max(0.4, frame.shape[1] / 800)
    cv2.putText(picture, text, (6, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                max(1, round(2 * scale)), cv2.LINE_AA)
    return picture


class _OverlayWriter:
    """Writes overlays: a PNG per image, an MP4 per video; names never collide."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[str] = set()
        self.videos: dict[str, cv2.VideoWriter] = {}

    def _unique(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 1
        while candidate in self.used:
            candidate, n = f"{stem}_{n}{suffix}", n + 1
        self.used.add(candidate)
        return self.out_dir / candidate

    def write(self, frame: Frame, picture: np.ndarray) -> str:
        if not is_video(frame.source):
            path = self._unique(f"{Path(frame.source).stem}.png")
            write_image(path, picture)
            return str(path)
        writer = self.videos.get(frame.source)
        if writer is None:
            path = self._unique(f"{Path(frame.source).stem}_overlay.mp4")
            height, width = picture.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), video_fps(frame.source),
                                     (width, height))
            if not writer.isOpened():
                raise OSError(f"{path}: cannot open video writer")
            self.videos[frame.source] = writer
            self.used.add(path.name)
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        return str(self.out_dir / f"{Path(frame.source).stem}_overlay.mp4")

    def close(self) -> None:
        for writer in self.videos.values():
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


def predict_files(detector: Predictor, inputs: list[str], out_dir: str | Path | None = None,
                  batch_size: int = 1, on_frame: Callable[[dict], None] | None = None) -> list[dict]:
    """Predict every image and video frame named by ``inputs``.

    With ``out_dir``, writes ``predictions.jsonl`` and the overlays there. Returns the rows.
    """
    files = expand_inputs(inputs)
    writer = None
    lines = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _OverlayWriter(out_dir)
        lines = open(out_dir / "predictions.jsonl", "w")
    rows = []
    try:
        frames = (frame for path in files for frame in file_frames(path))
        for batch in _batches(frames, batch_size):
            for frame, result in zip(batch, detector.predict([f.image for f in batch]), strict=True):
                row = {"source": frame.source, "frame": frame.index, **result.to_dict()}
                if writer is not None:
                    row["overlay"] = writer.write(frame, annotate(frame.image, result))
                    lines.write(json.dumps(row) + "\n")
                rows.append(row)
                if on_frame is not None:
                    on_frame(row)
    finally:
        if writer is not None:
            writer.close()
            lines.close()
    return rows
