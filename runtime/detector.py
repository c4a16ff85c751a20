"""The edge-side detector: a verified bundle, one engine, and the same verdict logic as training."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime.backends import Backend, create_backend
from runtime.bundle import Bundle, open_bundle
from runtime.image_io import to_rgb8
from runtime.preprocess import batch_inputs
from runtime.result import Result
from runtime.scoring import Scoring


class Detector:
    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        self.scoring = Scoring.from_dict(bundle.manifest["scoring"])
        self.input_size = bundle.input_size

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", device: str | None = None,
             threads: int | None = None) -> Detector:
        """Open and verify ``bundle`` (folder or .tar), then start its engine."""
        opened = open_bundle(bundle)
        return cls(opened, create_backend(opened, backend, device, threads))

    @property
    def name(self) -> str:
        return self.bundle.name

    def predict(self, frames: list[np.ndarray], color_order: str = "RGB") -> list[Result]:
        """Verdicts for frames of any size; heatmaps come back at each frame's size."""
        start = time.perf_counter()
        frames = [to_rgb8(frame, color_order) if frame.ndim == 2 or color_order != "RGB" or frame.dtype != np.uint8
                  else frame for frame in frames]
        inputs = batch_inputs(frames, self.input_size)
        heatmaps, scores = self.backend.infer(inputs)
        latency = (time.perf_counter() - start) * 1000 / max(len(frames), 1)
        return [self.scoring.decide(float(s), h, x, f.shape[:2], latency)
                for s, h, x, f in zip(scores, heatmaps, inputs, frames, strict=True)]
