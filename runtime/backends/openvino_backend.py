"""OpenVINO: Intel CPUs, integrated GPUs and NPUs, with asynchronous infer requests for pipelining."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from runtime.backends import OUTPUT_NAMES
from runtime.backends.engine import EngineFiles
from runtime.manifest import BundleError

# Called with (tag, (heatmaps, scores)) when a request finishes, or (tag, exception) when it fails.
Completion = Callable[[object, "tuple[np.ndarray, np.ndarray] | BaseException"], None]


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, files: EngineFiles, device: str | None = None, threads: int | None = None,
                 performance: str = "latency") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError('the openvino backend needs `pip install "edge-anomaly[openvino]"`') from exc
        core = ov.Core()
        self.device = (device or "CPU").upper()
        plugin = self.device.split(".")[0].split(":")[0]
        if plugin not in ("AUTO", "HETERO", "MULTI") and not any(d.split(".")[0] == plugin
                                                                 for d in core.available_devices):
            raise ValueError(f"OpenVINO device {self.device!r} is not available here "
                             f"(available: {', '.join(core.available_devices)})")
        path = files.model_file(self.name)
        model = core.read_model(str(path), str(files.files["weights"])) if path.suffix == ".xml" else \
            core.read_model(str(path))
        self.max_batch, self.static_batch = files.batch.max_batch, files.batch.static
        height, width = files.input_size
        if plugin == "NPU" and not self.static_batch:  # NPUs compile static shapes only
            model.reshape({model.input(0).get_any_name(): [1, height, width, 3]})
            self.max_batch, self.static_batch = 1, True
        config: dict = {"PERFORMANCE_HINT": performance.upper()}
        if plugin == "CPU":
            # What the export's parity check verified (engine.inference_precision: f32, or bf16 for
            # a bf16 bundle), not the bf16 that newer CPUs would pick by default. A CPU without
            # BF16 computes a bf16 bundle in f32, which only makes it more exact.
            if files.inference_precision not in ("f32", "bf16"):
                raise BundleError(f"{path}: engine.inference_precision {files.inference_precision!r} "
                                  "is not f32 or bf16")
            config["INFERENCE_PRECISION_HINT"] = files.inference_precision
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise BundleError(f"{path}: OpenVINO could not compile the model for {self.device}: {exc}") from None
        self._heatmap, self._score = (self.compiled.output(name) for name in OUTPUT_NAMES)
        self._requests = threading.local()

    @property
    def optimal_requests(self) -> int:
        """How many requests the device wants in flight (1 under the latency hint on most CPUs)."""
        return int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @property
    def request(self):
        """This thread's infer request: a request runs one inference at a time, and cameras that share a
        bundle call ``infer`` from their own threads (one shared request answered "Infer Request is busy")."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        return request

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The request reads the caller's (contiguous) array in place; its outputs come back as copies
        # of its own buffers (share_outputs=False), which the next call may reuse.
        outputs = self.request.infer({0: inputs}, share_inputs=True)
        return outputs[self._heatmap], outputs[self._score]

    def infer_queue(self, on_done: Completion, jobs: int = 0) -> AsyncQueue:
        """A pool of asynchronous requests (``jobs`` = 0: the device's optimal number)."""
        return AsyncQueue(self, on_done, jobs)


class AsyncQueue:
    """OpenVINO's AsyncInferQueue with outputs copied out of the request before it is reused."""

    def __init__(self, backend: OpenVinoBackend, on_done: Completion, jobs: int) -> None:
        import openvino as ov

        self.backend = backend
        self.on_done = on_done
        self.queue = ov.AsyncInferQueue(backend.compiled, jobs)
        self.queue.set_callback(self._finished)

    def __len__(self) -> int:
        return len(self.queue)

    def _finished(self, request, tag) -> None:
        try:
            outputs = (request.get_tensor(self.backend._heatmap).data.copy(),
                       request.get_tensor(self.backend._score).data.copy())
        except BaseException as exc:  # handed to the consumer: an exception here would be lost in OpenVINO's thread
            self.on_done(tag, exc)
            return
        self.on_done(tag, outputs)

    def submit(self, inputs: np.ndarray, tag: object) -> None:
        """Start one inference; blocks while every request is busy (the pipeline's back-pressure)."""
        self.queue.start_async({0: inputs}, tag)

    def wait_all(self) -> None:
        self.queue.wait_all()
