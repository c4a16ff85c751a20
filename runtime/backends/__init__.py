"""Inference engines behind one call: uint8 NHWC images in, (heatmaps, raw scores) out.

Each backend imports its engine only when chosen, so an edge box needs just the one it uses.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from runtime.bundle import Bundle, BundleError


class Backend(Protocol):
    name: str

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def create_backend(bundle: Bundle, backend: str = "auto", device: str | None = None,
                   threads: int | None = None) -> Backend:
    """The backend for ``bundle``: by name, or ("auto") the one its engine format needs."""
    engine_format = bundle.engine["format"]
    name = {"onnx": "onnxruntime"}.get(engine_format, engine_format) if backend == "auto" else backend
    if name == "onnxruntime":
        if engine_format != "onnx":
            raise BundleError(f"{bundle.folder}: onnxruntime cannot run a {engine_format} bundle")
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, device=device, threads=threads)
    raise BundleError(f"backend {name!r} is not available for a {engine_format} bundle")
