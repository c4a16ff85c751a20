"""Where a PatchCore bundle's time goes: backbone, nearest-neighbour search, heatmap, the rest.

Each engine profiles its own operations (ONNX Runtime's session profile, OpenVINO's per-node
performance counters); an operation is put in a part by the ONNX node it came from
(exporters.graph_parts), or, where the engine renamed it while fusing, by its kind
(convolutions belong to the backbone, matrix products to the search).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from exporters.graph_parts import node_part, search_products
from runtime.backends import CPU_FORMATS, NATIVE_BACKEND
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.openvino_backend import OpenVinoBackend
from runtime.bundle import open_bundle

if TYPE_CHECKING:
    from edge_anomaly.model import TrainedModel

PARTS = ("backbone", "search", "heatmap", "rest")
SEARCH_OPS = {"MatMul", "Gemm", "ReduceMin", "Min", "Add", "Mul"}
# Engine operation kinds that only the backbone has, for names the engines made up while fusing.
BACKBONE_KINDS = {"Conv", "QLinearConv", "FusedConv", "QLinearAdd", "ReorderInput", "ReorderOutput", "Convolution",
                  "GroupConvolution", "QuantizeLinear", "DequantizeLinear", "FakeQuantize", "Reorder"}
PRODUCT_KINDS = {"Gemm", "MatMul", "FusedMatMul", "FullyConnected", "MatMulIntegerToFloat"}
RUNS = 20


def part_names(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX node name (and output name, which OpenVINO sometimes uses) -> part."""
    search = set(search_products(model))
    names = {}
    for node in model.graph.node:
        part = node_part(node)
        scopes = [prop.value for prop in node.metadata_props if prop.key == "pkg.torch.onnx.name_scopes"]
        top_level = not scopes or scopes[0].count(",") < 2
        if part == "backbone":
            kind = "backbone"
        elif node.name in search or (not top_level and node.op_type in SEARCH_OPS):
            kind = "search"
        elif top_level and node.op_type == "MatMul":
            kind = "heatmap"
        else:
            kind = "rest"
        for name in (node.name, *node.output):
            names[name] = kind
    return names


def _classify(name: str, kind: str, names: dict[str, str]) -> str:
    base = name.split("/")[0]
    if base in names:
        return names[base]
    if kind in BACKBONE_KINDS:
        return "backbone"
    return "search" if kind in PRODUCT_KINDS else "rest"


def onnxruntime_parts(path: Path, names: dict[str, str], image: np.ndarray, threads: int, hint: str | None) -> Counter:
    """``hint``: the bundle's inference precision, which ONNX Runtime has none of (its model file is the precision)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "edge-anomaly-parts")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(RUNS):
        session.run(None, {"images": image})
    profile = Path(session.end_profiling())
    totals: Counter = Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            totals[_classify(name, event["args"].get("op_name", ""), names)] += event["dur"] / 1000 / RUNS
    profile.unlink()
    return totals


def openvino_parts(path: Path, names: dict[str, str], image: np.ndarray, threads: int, hint: str | None) -> Counter:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint or "f32",
        "PERF_COUNT": True})
    request = compiled.create_infer_request()
    totals: Counter = Counter()
    for _ in range(RUNS):
        request.infer({0: image})
        for info in request.profiling_info:
            totals[_classify(info.node_name, info.node_type, names)] += \
                info.real_time.total_seconds() * 1000 / RUNS
    return totals


Profiler = Callable[[Path, dict[str, str], np.ndarray, int, str | None], Counter]
# Each engine's profile, keyed by its backend class's own name (the engine table's row name, runtime.backends).
PROFILERS: dict[str, Profiler] = {OnnxRuntimeBackend.name: onnxruntime_parts, OpenVinoBackend.name: openvino_parts}


def check_profilers(profilers: Mapping[str, Profiler]) -> None:
    """Raise naming every backend of ``runtime.backends.CPU_FORMATS`` (the formats the benchmarks export and
    measure) that has no profiler here, so a new or renamed engine stops the run instead of printing no row."""
    missing = [f"{NATIVE_BACKEND[fmt]} (format {fmt})" for fmt in CPU_FORMATS if NATIVE_BACKEND[fmt] not in profilers]
    if missing:
        raise RuntimeError(f"bench/parts.py has no profiler for the backend of {', '.join(missing)}: add one to "
                           "PROFILERS")


check_profilers(PROFILERS)  # at import: before bench.export fits and exports anything


def bench_parts(bundles: dict[tuple[str, str], Path], model: TrainedModel, threads: int) -> list[str]:
    """One markdown row per bundle: milliseconds per image in each part."""
    from exporters.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        names = part_names(onnx.load(str(export_onnx(model.graph, Path(tmp) / "trace.onnx"))))
    image = np.zeros((1, *model.input_size, 3), np.uint8) + 128
    rows = []
    for (fmt, precision), folder in bundles.items():
        engine = open_bundle(folder).manifest.engine
        model_file = folder / engine.files["model"]
        totals = PROFILERS[NATIVE_BACKEND[fmt]](model_file, names, image, threads, engine.inference_precision)
        rows.append(f"| {fmt} | {precision} | " + " | ".join(f"{totals[part]:.1f}" for part in PARTS)
                    + f" | {sum(totals.values()):.1f} |")
    return rows
