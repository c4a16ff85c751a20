"""The edge-side detector: a verified bundle, one engine, and the same verdict logic as training.

``predict`` is three steps that the pipelined runner also calls one by one on separate threads:
:meth:`Detector.prepare` (frame -> model input, region), :meth:`Detector.infer` (the engine)
and :meth:`Detector.decide` (raw outputs -> :class:`Result` at the frame's size).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from runtime.backends import Backend, open_engine, run_batched
from runtime.bundle import Bundle, BundleError, ManifestCheck, open_bundle
from runtime.global_stats import capture_statistics
from runtime.preprocess import check_frame, frame_to_input, inspected_region
from runtime.result import Result
from runtime.roi import Region, check_center_crop, check_roi
from runtime.self_test import SelfTestReport, check_bundle

_FROM_DETECTOR = object()  # "use the detector's setting" for per-call roi / center_crop


@dataclass
class Prepared:
    """One frame made ready for the engine: its model input and where it came from in the frame."""

    input: np.ndarray  # RGB uint8 at the model's input size
    frame_hw: tuple[int, int]
    region: Region
    capture: np.ndarray | None = None  # the frame's capture statistics, when the model checks them


class Detector:
    def __init__(self, bundle: Bundle, backend: Backend, roi: list[int] | None = None,
                 center_crop: float | None = None) -> None:
        """``roi``/``center_crop`` override the bundle's ``input.roi``/``input.center_crop`` when given."""
        self.bundle = bundle
        self.backend = backend
        self.self_test: SelfTestReport | None = None  # set by load(); the station reports it in status
        self.scoring = bundle.manifest.scoring
        self.capture_profile = bundle.manifest.capture
        self.input_size = bundle.input_size
        declared = bundle.manifest.input
        try:  # the manifest's own were checked as it was parsed
            self.roi = check_roi(roi) if roi is not None else declared.roi
            self.center_crop = check_center_crop(center_crop) if center_crop is not None else declared.center_crop
        except ValueError as exc:
            raise BundleError(str(exc)) from None

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", device: str | None = None,
             threads: int | None = None, roi: list[int] | None = None, center_crop: float | None = None,
             performance: str = "latency", check: ManifestCheck | None = None,
             self_test: str = "refuse") -> Detector:
        """Open and verify ``bundle`` (folder or .tar), start its engine and run the bundle's self-test.

        ``backend``: auto, onnxruntime, openvino or tensorrt; ``device``: CPU, GPU, NPU (OpenVINO),
        CUDA (onnxruntime), cuda:N (TensorRT); ``performance``: latency or throughput (pipelined);
        ``check``: run on the manifest before any file is hashed, e.g. ``TrustList.verify`` (runtime.signing).
        ``self_test``: ``refuse`` raises :class:`runtime.self_test.SelfTestError` when the engine
        here scores the bundle's own images unlike the exporting engine; ``warn`` logs it and
        keeps the report in :attr:`self_test`.
        """
        opened = open_bundle(bundle, check)
        detector = cls(opened, open_engine(opened, backend, device, threads, performance), roi, center_crop)
        detector.self_test = check_bundle(detector, self_test)
        return detector

    @property
    def name(self) -> str:
        return self.bundle.name

    def prepare(self, frame: np.ndarray, color_order: str = "RGB", roi=_FROM_DETECTOR,
                center_crop=_FROM_DETECTOR) -> Prepared:
        """Model input for one frame of any size, colour order (RGB/BGR), gray or 16-bit."""
        roi = self.roi if roi is _FROM_DETECTOR else check_roi(roi)
        center_crop = self.center_crop if center_crop is _FROM_DETECTOR else check_center_crop(center_crop)
        check_frame(frame)
        region = inspected_region(frame.shape[:2], roi, center_crop)
        capture = capture_statistics(frame, region, color_order) if self.scoring.checks_capture else None
        return Prepared(frame_to_input(frame, self.input_size, color_order, region), frame.shape[:2], region, capture)

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (heatmaps, scores) for stacked model inputs, in engine-sized calls (a fixed batch is padded)."""
        return run_batched(self.backend, inputs)

    def decide(self, prepared: Prepared, heatmap: np.ndarray, score: float, latency_ms: float) -> Result:
        """The verdict for one prepared frame from its raw engine outputs."""
        return self.scoring.decide(float(score), heatmap, prepared.input, prepared.frame_hw, latency_ms,
                                   prepared.region, prepared.capture)

    @overload
    def predict(self, frames: np.ndarray, color_order: str = ..., roi=..., center_crop=...) -> Result: ...

    @overload
    def predict(self, frames: list[np.ndarray], color_order: str = ..., roi=..., center_crop=...) -> list[Result]: ...

    def predict(self, frames, color_order: str = "RGB", roi=_FROM_DETECTOR, center_crop=_FROM_DETECTOR):
        """Verdicts for a list of frames (one call, batched), or for a single frame.

        Heatmaps come back at each frame's size; ``latency_ms`` is the call's time per frame.
        """
        if isinstance(frames, np.ndarray):
            return self.predict([frames], color_order, roi, center_crop)[0]
        start = time.perf_counter()
        prepared = [self.prepare(frame, color_order, roi, center_crop) for frame in frames]
        if not prepared:
            return []
        heatmaps, scores = self.infer(np.stack([p.input for p in prepared]))
        results = [self.decide(p, h, s, 0.0) for p, h, s in zip(prepared, heatmaps, scores, strict=True)]
        latency = (time.perf_counter() - start) * 1000 / len(prepared)
        for result in results:
            result.latency_ms = latency
        return results
