"""A serialized TensorRT engine built from the exported ONNX with the ``tensorrt`` Python API.

Needs an NVIDIA GPU and the ``tensorrt`` package (``pip install "edge-anomaly[tensorrt]"``);
both are imported only here and only when a TensorRT export is asked for. FP16 sets the
builder's FP16 flag with the scorer's layers held in FP32 (PatchCore's distance is a small
difference of large numbers); INT8 builds from a QDQ ONNX (explicit quantisation), so the
quantised parts are exactly those the QDQ nodes mark and everything else runs in FP32.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from exporters.graph_parts import node_names
from exporters.onnx_export import INPUT_NAME

WORKSPACE_BYTES = 2 << 30


def import_tensorrt():
    """The ``tensorrt`` module, or an error that says how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError('TensorRT export needs an NVIDIA GPU and `pip install "edge-anomaly[tensorrt]"` '
                           f"(the tensorrt package could not be imported: {exc})") from exc
    return tensorrt


def build_engine(source: Path, target: Path, precision: str, *, height: int, width: int,
                 batch: int | None, max_batch: int, fp32_nodes_from: Path | None = None) -> Path:
    """Build and serialize an engine for ``source`` (an FP32 or QDQ ONNX file) to ``target``.

    ``batch`` fixes the batch size; ``None`` gives an optimisation profile from 1 to
    ``max_batch``. ``fp32_nodes_from`` is the ONNX file whose scorer nodes stay in FP32.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{source}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if precision == "fp16" and fp32_nodes_from is not None:
        keep = set(node_names(onnx.load(str(fp32_nodes_from)), ["scorer"]))
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.name in keep:
                layer.precision = trt.float32
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    smallest, largest = (batch, batch) if batch else (1, max_batch)
    profile.set_shape(INPUT_NAME, (smallest, height, width, 3), (smallest, height, width, 3),
                      (largest, height, width, 3))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{source}: TensorRT failed to build the {precision} engine (see its log above)")
    target.write_bytes(bytes(serialized))
    return target
