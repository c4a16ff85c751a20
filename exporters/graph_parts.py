"""Which nodes of an exported graph are the backbone and which the scorer.

Reduced precision is applied per part: the backbone's convolutions take INT8 and FP16 well,
while a scorer's distances (PatchCore's |x|^2 - 2 x.m + |m|^2, a small difference of large
numbers; PaDiM's Mahalanobis form) may not. Which parts a template quantises by default is its
own (``Scorer.int8_parts``); this module only tells the parts apart. The torch exporter
records each node's module path in its metadata (``pkg.torch.onnx.name_scopes``); nodes under
``extractor`` are the backbone and the rest (input scaling, scorer, upsampling, smoothing)
count as the scorer.
"""

from __future__ import annotations

import ast

import onnx

PARTS = ("backbone", "scorer")
INDEX_OPS = ("ArgMin", "ArgMax")  # ops whose output is a choice, which INT8 noise flips
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
    """The scorer's matrix products worth INT8 inputs (PatchCore's search over the bank, PaDiM's Mahalanobis
    product), by a rule that holds for any template: every scorer product except one whose result reaches an
    arg-min or arg-max, directly or through elementwise arithmetic, since an INT8 error there changes the index
    the scorer picks outright (PatchCore: the worst patch's neighbour). Not the heatmap's upsampling matrices
    either (the graph's own ops: cheap, and their output is the heatmap)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def picks_an_index(node: onnx.NodeProto) -> bool:
        following = [c for name in node.output for c in consumers.get(name, [])]
        return any(c.op_type in INDEX_OPS or (c.op_type in ("Add", "Sub", "Mul") and picks_an_index(c))
                   for c in following)

    return [node.name for node in model.graph.node
            if node.op_type in ("Gemm", "MatMul") and _module(node) == "scorer" and not picks_an_index(node)]
