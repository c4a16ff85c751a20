"""OpenVINO IR (``model.xml`` + ``model.bin``) from the FP32 ONNX, in FP32, FP16 or INT8 (NNCF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from exporters.graph_parts import node_names, output_names, search_products


def _scorer_operations(model, onnx_model: onnx.ModelProto, quantize_products: bool) -> list[str]:
    """Friendly names of the OpenVINO operations that came from scorer nodes, to keep out of
    INT8: all of them, or all but the search's matrix products. OpenVINO names an operation
    after its ONNX node (sometimes with a ``/suffix``), or after its output where that is a
    graph output (the heatmap's last product is called ``heatmap``)."""
    scorer = set(node_names(onnx_model, ["scorer"])) | set(output_names(onnx_model, ["scorer"]))
    products = set(search_products(onnx_model)) if quantize_products else set()
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_friendly_name().split("/")[0] in scorer
            and not (op.get_friendly_name().split("/")[0] in products and op.get_type_name() == "MatMul")]


def export_openvino(source: Path, target: Path, precision: str, *, parts: list[str],
                    calibration: np.ndarray | None = None, batch: int = 1, overflow_fix: bool = True) -> Path:
    """Write ``target`` (``.xml``, with its ``.bin``) from the ONNX file ``source``.

    FP16 stores weights in half precision (the CPU plugin computes in FP32, GPUs and NPUs in
    FP16). BF16 stores FP32 weights: the bundle pins OpenVINO's bf16 inference precision at
    run time (engine.inference_precision). INT8 quantises the nodes of ``parts`` with NNCF; in
    the scorer only the search's matrix products are quantised (inputs only), so distances are
    accumulated in float, and always with full bias correction. ``overflow_fix`` gives every
    layer 7-bit weights so that CPUs without VNNI do not saturate (exporters.recipes); on
    bottle PatchCore it kept the pixel AUROC loss at 0.0003 on such a CPU, where NNCF's
    defaults lost 0.022. Without ``backbone`` in ``parts`` the backbone stays FP32.
    """
    import openvino as ov

    model = ov.convert_model(str(source))
    if precision == "int8":
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        if calibration is None or len(calibration) < batch:
            raise ValueError(f"INT8 calibration needs at least {batch} normal images")
        onnx_model = onnx.load(str(source))
        ignored = _scorer_operations(model, onnx_model, quantize_products="scorer" in parts)
        if "backbone" not in parts:
            backbone = set(node_names(onnx_model, ["backbone"])) | set(output_names(onnx_model, ["backbone"]))
            ignored += [op.get_friendly_name() for op in model.get_ops()
                        if op.get_friendly_name().split("/")[0] in backbone]
        batches = [calibration[start:start + batch] for start in range(0, len(calibration) - batch + 1, batch)]
        model = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                              ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                              fast_bias_correction=False,
                              advanced_parameters=AdvancedQuantizationParameters(
                                  overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE))
    ov.save_model(model, str(target), compress_to_fp16=precision == "fp16")
    return target
