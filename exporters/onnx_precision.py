"""ONNX in FP16 and INT8, derived from the FP32 export.

FP16 uses onnxruntime's float16 converter with the model's uint8 input and float32 outputs
kept; INT8 is onnxruntime's post-training static quantisation (QDQ), calibrated on normal
images. Either can be limited to parts of the graph (see ``graph_parts``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

from exporters.graph_parts import PARTS, node_names, search_products
from exporters.onnx_export import INPUT_NAME


def convert_fp16(source: Path, target: Path, parts: list[str]) -> Path:
    """Write ``source`` with the nodes of ``parts`` in FP16 and every other node in FP32."""
    model = onnx.load(str(source))
    keep_fp32 = node_names(model, [part for part in PARTS if part not in parts])
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_fp32)
    onnx.save(half, str(target))
    return target


class ImageReader(CalibrationDataReader):
    """Feeds calibration images to onnxruntime's calibrator in batches the graph accepts."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        usable = len(images) - len(images) % batch
        if usable == 0:
            raise ValueError(f"INT8 calibration needs at least {batch} images (the static batch), got {len(images)}")
        self._batches = iter([images[start:start + batch] for start in range(0, usable, batch)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, parts: list[str], *,
                  batch: int = 1, symmetric: bool = False, uint8_weights: bool = False) -> Path:
    """Static INT8 (QDQ) of the nodes in ``parts``; the rest stays FP32.

    Activations are uint8 and weights int8, symmetric per channel (U8S8, ONNX Runtime's fast
    kernels); ``uint8_weights`` (U8U8) keeps x86 CPUs without VNNI from saturating
    (exporters.recipes). In the scorer only the search's matrix products take INT8 inputs and
    their float outputs stay unquantised, so distances keep their precision. ``symmetric``
    gives int8 activations too, with zero points of 0, as TensorRT's explicit quantisation
    requires.
    """
    model = onnx.load(str(source))
    nodes = node_names(model, [part for part in parts if part != "scorer"])
    if "scorer" in parts:
        products = set(search_products(model))
        ranks = {init.name: len(init.dims) for init in model.graph.initializer}
        batched = [node.name for node in model.graph.node
                   if node.name in products and any(ranks.get(name, 2) > 2 for name in node.input)]
        if batched:
            raise ValueError(f"ONNX Runtime cannot quantise the batched matrix products {batched} of this "
                             "scorer (PaDiM's per-position precision matrices) per channel: export INT8 with "
                             "--format openvino")
        nodes += sorted(products)
    quantize_static(
        str(source), str(target), ImageReader(calibration, batch), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QUInt8 if uint8_weights and not symmetric else QuantType.QInt8, nodes_to_quantize=nodes,
        extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"], "ActivationSymmetric": symmetric,
                       "WeightSymmetric": symmetric or not uint8_weights})
    return target
