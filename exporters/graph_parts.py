"""Which nodes of an exported graph are the backbone and which the scorer.

Reduced precision is applied per part: the backbone's convolutions take INT8 and FP16 well,
while PatchCore's distance (|x|^2 - 2 x.m + |m|^2, a small difference of large numbers) and
PaDiM's Mahalanobis form may not. The torch exporter records each node's module path in its
metadata (``pkg.torch.onnx.name_scopes``); nodes under ``extractor`` are the backbone and the
rest (input scaling, scorer, upsampling, smoothing) count as the scorer.
"""

from __future__ import annotations

import ast

import onnx

PARTS = ("backbone", "scorer")
_SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def _module(node: onnx.NodeProto) -> str | None:
    """The top-level module a node was traced in (extractor, scorer), None for the graph's own ops."""
    for prop in node.metadata_props:
        if prop.key == _SCOPE_KEY:
            scopes = ast.literal_eval(prop.value)
            return scopes[1] if len(scopes) > 2 else None
    return None


def node_part(node: onnx.NodeProto) -> str:
    """``backbone`` or ``scorer`` for one node of a graph exported by :func:`export_onnx`."""
    return "backbone" if _module(node) == "extractor" else "scorer"


def nodes_by_part(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    parts: dict[str, list[onnx.NodeProto]] = {part: [] for part in PARTS}
    for node in model.graph.node:
        parts[node_part(node)].append(node)
    if not parts["backbone"]:
        raise ValueError("the ONNX graph carries no module scopes: cannot tell the backbone from the scorer")
    return parts


def node_names(model: onnx.ModelProto, parts: list[str]) -> list[str]:
    """Names of the nodes that belong to ``parts``."""
    return [node.name for part, nodes in nodes_by_part(model).items() if part in parts for node in nodes]


def output_names(model: onnx.ModelProto, parts: list[str]) -> list[str]:
    """Output tensor names of the nodes in ``parts`` (OpenVINO names its operations after these)."""
    return [name for part, nodes in nodes_by_part(model).items() if part in parts
            for node in nodes for name in node.output]


def search_products(model: onnx.ModelProto) -> list[str]:
    """The scorer's matrix products worth INT8 inputs: PatchCore's search over the bank and
    PaDiM's Mahalanobis product. Not the heatmap's upsampling matrices (cheap, and their
    output is the heatmap) nor the product whose arg-min picks the worst patch's neighbour
    (an INT8 error there changes the reweighting's neighbourhood outright)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches_argmin(node: onnx.NodeProto) -> bool:  # directly or through elementwise arithmetic
        following = [c for name in node.output for c in consumers.get(name, [])]
        return any(c.op_type == "ArgMin" or (c.op_type in ("Add", "Sub", "Mul") and reaches_argmin(c))
                   for c in following)

    return [node.name for node in model.graph.node
            if node.op_type in ("Gemm", "MatMul") and _module(node) == "scorer" and not reaches_argmin(node)]
