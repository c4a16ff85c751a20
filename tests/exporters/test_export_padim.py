"""PaDiM exports too, and INT8 does not wreck it (anomalib's INT8 PaDiM scored AUROC 0.5)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # fits and exports PaDiM: not in -m "not slow"


@pytest.fixture(scope="module")
def padim_model(boards):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    template, params = load_params("padim", overrides=[])
    return fit_model(boards, template, params)


def test_padim_int8_openvino_bundle(padim_model, tmp_path):
    pytest.importorskip("openvino")
    from exporters.export import export_bundle

    folder, _ = export_bundle(padim_model, tmp_path / "padim-int8", fmt="openvino", precision="int8")
    manifest = json.loads((folder / "manifest.json").read_text())
    # PaDiM's backbone stays FP32: its precision matrices amplify an INT8 backbone's noise.
    assert manifest["template"] == "padim" and manifest["engine"]["quantized"] == ["scorer"]
    assert manifest["engine"]["parts"]["backbone"] == "fp32"
    parity = manifest["parity"]
    assert parity["passed"] and parity["score_rank_corr"] >= 0.9 and parity["image_auroc_delta"] >= -0.02
    assert manifest["engine"]["score_alignment"]["slope"] > 0


def test_padim_int8_onnx_names_what_it_cannot_quantise(padim_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from exporters.export import export_bundle

    with pytest.raises(ValueError, match="--format openvino"):
        export_bundle(padim_model, tmp_path / "padim-onnx-int8", fmt="onnx", precision="int8")
    assert not (tmp_path / "padim-onnx-int8").exists()
