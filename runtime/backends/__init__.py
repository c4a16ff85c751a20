"""The engine table: one :class:`EngineSpec` per inference engine, and every list of engines derived from it.

The manifest's allowed formats, the device profiles' backends and the formats each runs, the
command line's ``--backend`` and ``--format`` choices and the graph's tensor names all come
from :data:`ENGINES`; adding an engine is one row here plus its backend module (ARCHITECTURE.md,
How to add). Rows name their backend class by module path and class name, so reading the table
imports no engine library, not even numpy: the CLI builds its parser from it on every call, also
on an edge box. The opening API (:func:`open_engine`, :class:`EngineFiles`, :func:`run_batched`)
lives in ``runtime.backends.engine`` and is re-exported here when first used.
"""

from __future__ import annotations

from dataclasses import dataclass

# The traced graph's tensors: uint8 NHWC images in, a heatmap per image and a raw score per image out.
INPUT_NAME = "images"
OUTPUT_NAMES = ("heatmap", "score")
ONNX_FORMAT = "onnx"  # the one format several engines read: every bundle that carries it can fall back


@dataclass(frozen=True)
class EngineSpec:
    """What the rest of the code base knows of one engine; its behaviour is in ``module``.``class_name``."""

    name: str  # the backend: --backend, a device profile's runtime.backend
    title: str  # the engine's own spelling, for messages and help
    format: str  # the bundle format it writes and runs natively (one row per format): engine.format, --format
    suffix: str  # the model file's suffix in a bundle (model<suffix>)
    package: str  # the Python module whose presence means the engine is installed
    extra: str  # the pyproject extra that installs it: pip install "edge-anomaly[<extra>]"
    devices: tuple[str, ...]  # engine devices (--engine-device), the default first
    precisions: tuple[str, ...]  # export precisions of its format (runtime.manifest.PRECISIONS)
    module: str  # the backend class's module, imported only when the engine is opened
    class_name: str
    reads_onnx: bool  # also runs the ONNX model of another format's bundle
    onnx_twin: bool = False  # its bundles carry model.onnx beside the model (file role "onnx")
    weights_suffix: str | None = None  # a weights file beside the model (file role "weights")
    options: tuple[str, ...] = ()  # open_engine settings its class takes besides device (threads, performance)

    def bundle_files(self) -> dict[str, str]:
        """File role -> file name in a bundle of this format (the manifest's ``engine.files``)."""
        files = {"model": f"model{self.suffix}"}
        if self.weights_suffix:
            files["weights"] = f"model{self.weights_suffix}"
        if self.onnx_twin:
            files["onnx"] = f"model.{ONNX_FORMAT}"
        return files


ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("onnxruntime", "ONNX Runtime", ONNX_FORMAT, ".onnx", "onnxruntime", "onnxruntime", ("CPU", "CUDA"),
               ("fp32", "fp16", "int8"), "runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend",
               reads_onnx=True, options=("threads",)),
    EngineSpec("openvino", "OpenVINO", "openvino", ".xml", "openvino", "openvino", ("CPU", "GPU", "NPU"),
               ("fp32", "fp16", "bf16", "int8"), "runtime.backends.openvino_backend", "OpenVinoBackend",
               reads_onnx=True, weights_suffix=".bin", options=("threads", "performance")),
    EngineSpec("tensorrt", "TensorRT", "tensorrt", ".engine", "tensorrt", "tensorrt", ("cuda:N",),
               ("fp32", "fp16", "int8"), "runtime.backends.tensorrt_backend", "TensorRtBackend",
               reads_onnx=False, onnx_twin=True),
)
BY_NAME = {spec.name: spec for spec in ENGINES}
BY_FORMAT = {spec.format: spec for spec in ENGINES}
BACKENDS = tuple(BY_NAME)
ENGINE_FORMATS = tuple(BY_FORMAT)
PERFORMANCE_MODES = ("latency", "throughput")


def _candidates(engine_format: str) -> tuple[str, ...]:
    """The backends that can run a bundle of ``engine_format``, the format's own engine first."""
    own = BY_FORMAT[engine_format]
    carries_onnx = engine_format == ONNX_FORMAT or own.onnx_twin
    return (own.name, *(spec.name for spec in ENGINES if spec is not own and spec.reads_onnx and carries_onnx))


CANDIDATES = {engine_format: _candidates(engine_format) for engine_format in ENGINE_FORMATS}
NATIVE_BACKEND = {spec.format: spec.name for spec in ENGINES}
# The formats whose own engine runs on a CPU (what the benchmarks export and measure on the workstation).
CPU_FORMATS = tuple(spec.format for spec in ENGINES if "CPU" in spec.devices)
# The bundle formats each backend runs (a device profile's runtime.backend against its export.format).
RUNS = {name: tuple(fmt for fmt, backends in CANDIDATES.items() if name in backends) for name in BACKENDS}
ENGINE_DEVICE_HELP = "where the engine runs: " + "; ".join(
    f"{', '.join(spec.devices)} ({spec.title})" for spec in ENGINES)

# The opening API, imported on first use: it needs numpy, the manifest and the bundle.
_ENGINE_API = ("Backend", "EngineFiles", "choose_backend", "is_installed", "open_engine", "run_batched")


def __getattr__(name: str):
    """``from runtime.backends import open_engine`` (and the rest of the opening API) without loading it here."""
    if name in _ENGINE_API:
        from runtime.backends import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "BY_FORMAT", "BY_NAME", "CANDIDATES", "CPU_FORMATS", "ENGINES", "ENGINE_DEVICE_HELP",
           "ENGINE_FORMATS", "INPUT_NAME", "NATIVE_BACKEND", "ONNX_FORMAT", "OUTPUT_NAMES", "PERFORMANCE_MODES", "RUNS",
           "EngineSpec", *_ENGINE_API]
