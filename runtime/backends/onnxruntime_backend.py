"""ONNX Runtime: the portable CPU (and CUDA, where installed) engine."""

from __future__ import annotations

import numpy as np

from runtime.bundle import Bundle


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError('the onnxruntime backend needs `pip install "edge-anomaly[onnxruntime]"`') from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device and device.upper().startswith("CUDA"):
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(bundle.path("model")), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmap, score = self.session.run(["heatmap", "score"], {self.input_name: inputs})
        return heatmap, score
