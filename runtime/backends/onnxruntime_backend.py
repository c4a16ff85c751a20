"""ONNX Runtime: the portable CPU (and CUDA, where installed) engine."""

from __future__ import annotations

import numpy as np

from runtime.backends import OUTPUT_NAMES
from runtime.backends.engine import EngineFiles


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, files: EngineFiles, device: str | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError('the onnxruntime backend needs `pip install "edge-anomaly[onnxruntime]"`') from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        device = (device or "CPU").upper()
        if device.startswith("CUDA"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(f"device {device}: this onnxruntime has no CUDA provider "
                                 f"(available: {', '.join(ort.get_available_providers())})")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "CPU":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device {device!r}: the onnxruntime backend runs on CPU or CUDA")
        self.device = device
        self.max_batch, self.static_batch = files.batch.max_batch, files.batch.static
        self.session = ort.InferenceSession(str(files.model_file(self.name)), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmap, score = self.session.run(list(OUTPUT_NAMES), {self.input_name: inputs})
        return heatmap, score
