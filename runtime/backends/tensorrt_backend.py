"""TensorRT on NVIDIA GPUs (Jetson, dGPU): the serialized engine, with CUDA memory through cuda-python.

``tensorrt`` and ``cuda-python`` are imported only when this backend is chosen
(``pip install "edge-anomaly[tensorrt]"``). Device buffers are allocated once for the
largest batch and reused; a call copies inputs in, runs the engine on its own stream and
copies both outputs back.
"""

from __future__ import annotations

import threading

import numpy as np

from runtime.backends import INPUT_NAME, OUTPUT_NAMES
from runtime.backends.engine import EngineFiles
from runtime.manifest import BundleError


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise ImportError('the tensorrt backend needs `pip install "edge-anomaly[tensorrt]"` '
                              f"(cuda-python: {exc})") from exc
    return cudart


def _check(result):
    """cuda-python returns (error, *values): raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


class TensorRtBackend:
    name = "tensorrt"

    def __init__(self, files: EngineFiles, device: str | None = None) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise ImportError(f'the tensorrt backend needs `pip install "edge-anomaly[tensorrt]"` ({exc})') from exc
        self.cudart = cudart = _cudart()
        self.device = (device or "cuda:0").lower()
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        _check(cudart.cudaSetDevice(index))
        path = files.model_file(self.name)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(f"{path}: TensorRT could not deserialize the engine (built for another GPU or "
                              "TensorRT version? Rebuild it on this device with `edge-anomaly export`)")
        self.context = self.engine.create_execution_context()
        self.max_batch, self.static_batch = files.batch.max_batch, files.batch.static
        height, width = files.input_size
        self.dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                       for name in (INPUT_NAME, *OUTPUT_NAMES)}
        heatmap, score = OUTPUT_NAMES
        largest = {INPUT_NAME: (self.max_batch, height, width, 3), heatmap: (self.max_batch, height, width),
                   score: (self.max_batch,)}
        self.buffers = {name: _check(cudart.cudaMalloc(int(np.prod(shape)) * self.dtypes[name].itemsize))
                        for name, shape in largest.items()}
        for name, pointer in self.buffers.items():
            self.context.set_tensor_address(name, int(pointer))
        self.stream = _check(cudart.cudaStreamCreate())
        # One context, one set of device buffers: cameras sharing the bundle take turns.
        self._lock = threading.Lock()

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._infer(inputs)

    def _infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self.cudart
        inputs = np.ascontiguousarray(inputs, dtype=self.dtypes[INPUT_NAME])
        if not self.context.set_input_shape(INPUT_NAME, inputs.shape):
            raise ValueError(f"TensorRT engine refuses input shape {inputs.shape} (batch up to {self.max_batch})")
        _check(cudart.cudaMemcpyAsync(self.buffers[INPUT_NAME], inputs.ctypes.data, inputs.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed")
        outputs = []
        for name in OUTPUT_NAMES:
            host = np.empty(tuple(self.context.get_tensor_shape(name)), self.dtypes[name])
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name], host.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
            outputs.append(host)
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs[0].astype(np.float32, copy=False), outputs[1].astype(np.float32, copy=False)

    def __del__(self) -> None:
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        for pointer in getattr(self, "buffers", {}).values():
            cudart.cudaFree(pointer)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
