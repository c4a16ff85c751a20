"""The graph as ONNX: uint8 NHWC pixels in, heatmap and raw score out, weights inline."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from edge_anomaly.graph import AnomalyGraph
from runtime.backends import INPUT_NAME, OUTPUT_NAMES  # the tensor names every engine reads

OPSET = 18
TENSOR_ELEMENT_LIMIT = 2**31 - 1  # TensorRT refuses any tensor with more elements


def limit_search_chunks(graph: AnomalyGraph, max_batch: int) -> None:
    """Let the scorer keep every tensor within TensorRT's element limit at the largest batch the engine will
    see (PatchCore shrinks its bank chunks)."""
    graph.scorer.limit_tensor_elements(max_batch, TENSOR_ELEMENT_LIMIT)


def export_onnx(graph: AnomalyGraph, path: str | Path, *, batch: int | None = None, max_batch: int = 32) -> Path:
    """Write ``graph`` to ``path``. ``batch=None`` keeps the batch axis dynamic (1..max_batch);
    an integer fixes it (static shapes, as Intel NPUs need)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    limit_search_chunks(graph, batch or max_batch)
    height, width = graph.input_size
    example = torch.zeros((batch or 2, height, width, 3), dtype=torch.uint8)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph.eval(), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=dynamic, external_data=False, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path
