"""From a trained model folder to a verified bundle in the requested format and precision."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_anomaly.model import TrainedModel
from exporters.bundle import build_manifest, write_bundle
from exporters.onnx_export import INPUT_NAME, OUTPUT_NAMES, export_onnx


def export_bundle(model: TrainedModel, out: str | Path, *, fmt: str = "onnx", precision: str = "fp32",
                  batch: int | None = None, max_batch: int = 32, name: str | None = None) -> tuple[Path, Path]:
    """Export ``model`` into the bundle folder ``out`` (replaced if present) and ``out.tar``."""
    if (fmt, precision) != ("onnx", "fp32"):
        raise ValueError(f"export to {fmt} {precision} is not implemented yet")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    export_onnx(model.graph, out / "model.onnx", batch=batch, max_batch=max_batch)
    height, width = model.input_size
    batch_dim = batch if batch else -1
    engine = {
        "format": fmt,
        "precision": precision,
        "quantized": [],
        "files": {"model": "model.onnx"},
        "batch": {"dynamic": False, "size": batch} if batch else {"dynamic": True, "max": max_batch},
        "inputs": [{"name": INPUT_NAME, "shape": [batch_dim, height, width, 3], "dtype": "uint8"}],
        "outputs": [{"name": OUTPUT_NAMES[0], "shape": [batch_dim, height, width], "dtype": "float32"},
                    {"name": OUTPUT_NAMES[1], "shape": [batch_dim], "dtype": "float32"}],
    }
    return write_bundle(out, build_manifest(model, engine, name or out.name))
