"""Running an exported engine file at export time: uint8 NHWC images in, (heatmaps, raw scores) out.

The parity check and the benchmark need to run what was just written, before a bundle exists,
so this is a thin loader per format. The edge runtime (``runtime.backends``) has its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Engine(Protocol):
    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def run_batched(engine: Engine, inputs: np.ndarray, batch: int, static: bool) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``inputs`` in batches of ``batch``; a static engine gets its last batch padded to size."""
    heatmaps, scores = [], []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        count = len(chunk)
        if static and count < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, axis=0)])
        heatmap, score = engine.infer(np.ascontiguousarray(chunk))
        heatmaps.append(heatmap[:count])
        scores.append(score[:count])
    return np.concatenate(heatmaps).astype(np.float32), np.concatenate(scores).astype(np.float32)


class OnnxRuntimeEngine:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmap, score = self.session.run(["heatmap", "score"], {self.input_name: inputs})
        return heatmap, score


class OpenVinoEngine:
    def __init__(self, path: Path, threads: int | None = None, device: str = "CPU",
                 inference_precision: str = "f32") -> None:
        import openvino as ov

        # f32 inference on CPU unless the bundle is a bf16 one, so the check measures what the
        # runtime will pin, not the bf16 that newer CPUs would apply by default.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), device, config)
        self.request = self.compiled.create_infer_request()

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.request.infer({0: inputs})
        return (np.array(outputs[self.compiled.output("heatmap")]),
                np.array(outputs[self.compiled.output("score")]))


class TensorRtEngine:
    """A serialized TensorRT engine, with device buffers held by PyTorch (CUDA builds of torch)."""

    def __init__(self, path: Path) -> None:
        import torch

        from exporters.tensorrt_export import import_tensorrt

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("running a TensorRT engine needs a CUDA build of PyTorch and an NVIDIA GPU")
        self.torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.dtypes = {trt.DataType.UINT8: torch.uint8, trt.DataType.FLOAT: torch.float32,
                       trt.DataType.HALF: torch.float16}

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        images = torch.from_numpy(inputs).cuda()
        self.context.set_input_shape("images", tuple(images.shape))
        self.context.set_tensor_address("images", images.data_ptr())
        outputs = {}
        for name in ("heatmap", "score"):
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outputs["heatmap"].float().cpu().numpy(), outputs["score"].float().cpu().numpy()


def load_engine(fmt: str, path: Path, threads: int | None = None, inference_precision: str = "fp32") -> Engine:
    """The engine for an exported file of format ``fmt`` (onnx, openvino, tensorrt); a ``bf16``
    bundle runs OpenVINO at that inference precision."""
    if fmt == "onnx":
        return OnnxRuntimeEngine(path, threads)
    if fmt == "openvino":
        return OpenVinoEngine(path, threads, inference_precision="bf16" if inference_precision == "bf16" else "f32")
    if fmt == "tensorrt":
        return TensorRtEngine(path)
    raise ValueError(f"unknown engine format {fmt!r}")
