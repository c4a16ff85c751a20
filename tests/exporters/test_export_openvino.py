"""OpenVINO IR bundles with a static batch (as Intel NPUs need), in FP32, FP16 and INT8."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.bundle import open_bundle

pytestmark = pytest.mark.slow  # exports and parity checks: not in -m "not slow"

pytest.importorskip("openvino")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_openvino_static_bundle(board_export, board_model, boards, precision):
    import openvino as ov

    from edge_anomaly.data.folders import load_inputs
    from runtime.backends import open_engine, run_batched
    from runtime.image_io import list_images

    folder, archive = board_export("openvino", precision, batch=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.xml", "model.bin"} | {f"selftest_{index}.png" for index in range(8)}
    assert manifest["engine"]["quantized"] == ([] if precision == "fp32" else ["backbone", "scorer"])
    assert manifest["engine"]["batch"] == {"dynamic": False, "size": 2}
    assert manifest["parity"]["passed"] and manifest["parity"]["score_rank_corr"] >= 0.9
    open_bundle(archive)

    model = ov.Core().read_model(str(folder / "model.xml"))
    assert list(model.input(0).get_partial_shape().to_shape()) == [2, 256, 256, 3]
    assert str(model.input(0).get_element_type()) == "<Type: 'uint8_t'>"
    op_types = {op.get_type_name() for op in model.get_ops()}
    assert ("FakeQuantize" in op_types) == (precision == "int8")

    # Three images through a static batch of two: the engine is fed a padded second batch.
    _, trained = board_model
    images, _ = load_inputs(list_images(boards / "test", recursive=True)[:3], trained.input_size)
    heatmaps, scores = run_batched(open_engine(open_bundle(folder)), images)
    reference = trained.infer(images)[1]
    assert heatmaps.shape == (3, 256, 256) and np.isfinite(heatmaps).all()
    if precision != "int8":  # INT8 agreement is the parity check's (rank, AUROC) above
        np.testing.assert_allclose(scores, reference, rtol={"fp32": 1e-3, "fp16": 2e-2}[precision])


def test_cli_int8_export_for_a_cpu_without_a_dot_product_says_fp32_is_faster(board_model, tmp_path, capsys):
    """The AVX2 recipe cannot saturate but runs slower than FP32 there: the export's summary says so."""
    from edge_anomaly.cli import main

    assert main(["export", str(board_model[0]), "--format", "openvino", "--precision", "int8", "--target-isa", "avx2",
                 "--out", str(tmp_path / "avx2")]) == 0
    summary = capsys.readouterr().out
    assert "INT8 recipe for avx2: ONNX Runtime U8U8, OpenVINO 7-bit weights" in summary
    assert "note: INT8 for avx2 (no 8-bit dot product) runs slower than FP32" in summary
