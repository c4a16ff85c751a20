"""Opening an engine: uint8 NHWC images in, (heatmaps, raw scores) out, whichever engine runs.

The one place that opens an engine, for the edge (from a verified bundle) and for the exporter
(from the files it has just written, before a bundle exists: the parity check measures the
very loader an edge box runs). :func:`run_batched` is the one loop feeding any number of
images in engine-sized calls.

Each backend imports its engine only when chosen (``runtime.backends.ENGINES`` names its module),
so an edge box needs just the one it uses. "auto" takes the engine of the files' format when it is
installed, else another installed engine that can read one of the files (every ONNX and TensorRT
bundle carries an ONNX model, which ONNX Runtime and OpenVINO both read).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.backends import BACKENDS, BY_FORMAT, BY_NAME, CANDIDATES, ENGINE_FORMATS, PERFORMANCE_MODES
from runtime.bundle import Bundle
from runtime.manifest import Batch, BundleError, DynamicBatch


class Backend(Protocol):
    name: str
    max_batch: int  # the most images one infer call takes
    static_batch: bool  # True: every call must have exactly max_batch images

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class EngineFiles:
    """What an engine is opened from: a bundle's engine section, or the files an export just wrote.

    ``files`` maps roles to paths: ``model`` (the format's own file), ``weights`` (OpenVINO's
    .bin beside the .xml), ``onnx`` (the ONNX twin of a TensorRT engine). ``inference_precision``
    is OpenVINO's CPU precision the export's parity check ran at (f32, or bf16 for a bf16 bundle).
    """

    format: str
    files: dict[str, Path]
    input_size: tuple[int, int]
    batch: Batch = DynamicBatch()
    inference_precision: str = "f32"

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> EngineFiles:
        engine = bundle.engine
        return cls(engine.format, {role: bundle.path(role) for role in engine.files}, bundle.input_size, engine.batch,
                   engine.inference_precision or "f32")

    @classmethod
    def of_model(cls, path: Path, engine_format: str, input_size: tuple[int, int],
                 batch: Batch | None = None, inference_precision: str | None = None) -> EngineFiles:
        """An exported model file (OpenVINO: the .xml, its .bin beside it)."""
        path = Path(path)
        spec = BY_FORMAT.get(engine_format)  # an unknown format is refused by choose_backend, naming the known ones
        weights = spec.weights_suffix if spec else None
        files = {"model": path, **({"weights": path.with_suffix(weights)} if weights else {})}
        return cls(engine_format, files, input_size, batch or DynamicBatch(), inference_precision or "f32")

    def model_file(self, backend: str) -> Path:
        """The file ``backend`` reads: its own format's model, else the ONNX twin."""
        if backend not in CANDIDATES[self.format]:
            raise BundleError(f"{self.files['model'].parent}: the {backend} backend cannot run a {self.format} "
                              f"bundle (it can run: {', '.join(CANDIDATES[self.format])})")
        own = BY_FORMAT[self.format]
        role = "onnx" if own.onnx_twin and backend != own.name else "model"
        if role not in self.files:
            raise BundleError(f"{self.files['model'].parent}: engine.files has no {role!r} entry")
        return self.files[role]


def is_installed(backend: str) -> bool:
    return importlib.util.find_spec(BY_NAME[backend].package) is not None


def choose_backend(files: EngineFiles, backend: str = "auto") -> str:
    """The backend name for ``files``: the one asked for, or the first installed that can run them."""
    if files.format not in ENGINE_FORMATS:
        raise BundleError(f"engine format {files.format!r} is not one of {', '.join(ENGINE_FORMATS)}")
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of auto, {', '.join(BACKENDS)}")
        files.model_file(backend)
        return backend
    for candidate in CANDIDATES[files.format]:
        if is_installed(candidate):
            return candidate
    extras = " or ".join(f'"edge-anomaly[{BY_NAME[name].extra}]"' for name in CANDIDATES[files.format])
    raise ImportError(f"{files.files['model'].parent}: no engine installed for a {files.format} bundle: "
                      f"pip install {extras}")


def open_engine(source: Bundle | EngineFiles, backend: str = "auto", device: str | None = None,
                threads: int | None = None, performance: str = "latency") -> Backend:
    """Start the engine for a bundle or engine files: by name, or ("auto") by what is installed and the format.

    ``performance`` is "latency" (one frame as fast as possible) or "throughput" (several
    frames in flight, for the pipelined runner); engines without such a switch ignore it.
    """
    if performance not in PERFORMANCE_MODES:
        raise ValueError(f"performance {performance!r} is not one of {', '.join(PERFORMANCE_MODES)}")
    files = source if isinstance(source, EngineFiles) else EngineFiles.of_bundle(source)
    spec = BY_NAME[choose_backend(files, backend)]
    backend_class = getattr(importlib.import_module(spec.module), spec.class_name)
    settings = {"threads": threads, "performance": performance}
    return backend_class(files, device=device, **{option: settings[option] for option in spec.options})


def run_batched(backend: Backend, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw float32 (heatmaps, scores) for any number of stacked inputs, in calls the engine takes.

    Up to ``max_batch`` images per call; an engine with a fixed batch gets its last call padded
    with copies of the last image, whose outputs are dropped.
    """
    limit, static = backend.max_batch, backend.static_batch
    if len(inputs) == limit or (not static and len(inputs) < limit):
        heatmaps, scores = backend.infer(np.ascontiguousarray(inputs))
    else:
        heatmap_parts, score_parts = [], []
        for start in range(0, len(inputs), limit):
            chunk = inputs[start:start + limit]
            count = len(chunk)
            if static and count < limit:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], limit - count, axis=0)])
            heatmap, score = backend.infer(np.ascontiguousarray(chunk))
            heatmap_parts.append(heatmap[:count])
            score_parts.append(score[:count])
        heatmaps, scores = np.concatenate(heatmap_parts), np.concatenate(score_parts)
    return heatmaps.astype(np.float32, copy=False), scores.astype(np.float32, copy=False)
