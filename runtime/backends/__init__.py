"""Inference engines behind one call: uint8 NHWC images in, (heatmaps, raw scores) out.

Each backend imports its engine only when chosen, so an edge box needs just the one it uses.
"auto" takes the engine the bundle was exported for when it is installed, else another
installed engine that can read one of the bundle's files (every ONNX and TensorRT bundle
carries an ONNX model, which ONNX Runtime and OpenVINO both read).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.bundle import Bundle, BundleError

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PERFORMANCE_MODES = ("latency", "throughput")
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
# Which backends can run each engine format, the format's own engine first.
_CANDIDATES = {
    "onnx": ("onnxruntime", "openvino"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "onnxruntime", "openvino"),
}


class Backend(Protocol):
    name: str
    max_batch: int  # the most images one infer call takes
    static_batch: bool  # True: every call must have exactly max_batch images

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def engine_batch(bundle: Bundle) -> tuple[int, bool]:
    """(max images per call, whether the batch size is fixed) from the manifest's engine.batch."""
    batch = bundle.engine.get("batch") or {"dynamic": True, "max": 32}
    try:
        if batch.get("dynamic", True):
            return int(batch.get("max", 32)), False
        return int(batch["size"]), True
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{bundle.folder}: engine.batch {batch!r} is not {{dynamic, max}} or {{size}}") from None


def is_installed(backend: str) -> bool:
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def model_file(bundle: Bundle, backend: str) -> Path:
    """The bundle file ``backend`` reads: its own format's model, else the ONNX twin."""
    engine_format = bundle.engine["format"]
    if backend not in _CANDIDATES.get(engine_format, ()):
        raise BundleError(f"{bundle.folder}: the {backend} backend cannot run a {engine_format} bundle "
                          f"(it can run: {', '.join(_CANDIDATES.get(engine_format, ()))})")
    own = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}[backend]
    return bundle.path("model") if own == engine_format else bundle.path("onnx" if engine_format == "tensorrt"
                                                                             else "model")


def choose_backend(bundle: Bundle, backend: str = "auto") -> str:
    """The backend name for ``bundle``: the one asked for, or the first installed that can run it."""
    engine_format = bundle.engine.get("format")
    if engine_format not in _CANDIDATES:
        raise BundleError(f"{bundle.folder}: engine.format {engine_format!r} is not one of {', '.join(_CANDIDATES)}")
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of auto, {', '.join(BACKENDS)}")
        model_file(bundle, backend)
        return backend
    for candidate in _CANDIDATES[engine_format]:
        if is_installed(candidate):
            return candidate
    extras = " or ".join(f'"edge-anomaly[{name}]"' for name in _CANDIDATES[engine_format])
    raise ImportError(f"{bundle.folder}: no engine installed for a {engine_format} bundle: pip install {extras}")


def create_backend(bundle: Bundle, backend: str = "auto", device: str | None = None, threads: int | None = None,
                   performance: str = "latency") -> Backend:
    """Start the engine for ``bundle``: by name, or ("auto") by what is installed and the bundle's format.

    ``performance`` is "latency" (one frame as fast as possible) or "throughput" (several
    frames in flight, for the pipelined runner); engines without such a switch ignore it.
    """
    if performance not in PERFORMANCE_MODES:
        raise ValueError(f"performance {performance!r} is not one of {', '.join(PERFORMANCE_MODES)}")
    name = choose_backend(bundle, backend)
    if name == "onnxruntime":
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, device=device, threads=threads)
    if name == "openvino":
        from runtime.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(bundle, device=device, threads=threads, performance=performance)
    from runtime.backends.tensorrt_backend import TensorRtBackend

    return TensorRtBackend(bundle, device=device)
