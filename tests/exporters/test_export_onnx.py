"""ONNX bundles in FP32, FP16 and INT8: manifest, hashes, parity, agreement with PyTorch, limits."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest

from runtime.bundle import BundleError, open_bundle

pytestmark = pytest.mark.slow  # exports and parity checks: not in -m "not slow"

REQUIRED_MANIFEST = ("format", "schema_version", "template", "input", "scoring", "concepts", "engine",
                     "edge_anomaly_version", "files", "parity")
PARITY_KEYS = ("max_heatmap_diff", "score_rank_corr", "image_auroc_delta", "pixel_auroc_delta", "tolerances")
EXPECTED_PARTS = {"fp32": [], "fp16": ["backbone"], "int8": ["backbone", "scorer"]}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_onnx_bundle_agrees_with_pytorch(board_export, board_model, boards, precision):
    from exporters.parity import DEFAULT_TOLERANCES
    from runtime.detector import Detector
    from runtime.image_io import list_images, read_image

    folder, archive = board_export("onnx", precision)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert all(key in manifest for key in REQUIRED_MANIFEST)
    assert manifest["input"]["size"] == [256, 256] and manifest["input"]["color_order"] == "RGB"
    assert manifest["input"]["normalization"] and manifest["scoring"]["local"]["threshold"] > 0
    assert manifest["engine"]["precision"] == precision and manifest["engine"]["quantized"] == EXPECTED_PARTS[precision]
    assert set(manifest["files"]) == {"model.onnx"} | {f"selftest_{index}.png" for index in range(8)}
    parity = manifest["parity"]
    assert all(key in parity for key in PARITY_KEYS) and parity["passed"]
    assert parity["images"]["defective"] > 0 and parity["image_auroc_delta"] is not None
    assert parity["max_heatmap_diff"] <= DEFAULT_TOLERANCES[precision].max_heatmap_diff
    assert open_bundle(archive).manifest.files == manifest["files"]

    _, model = board_model
    frames = [read_image(p) for p in list_images(boards / "test", recursive=True)[::4]]
    detector = Detector.load(folder)
    engine_results, torch_results = detector.predict(frames), model.predict(frames)
    scores = np.array([[e.score, t.score] for e, t in zip(engine_results, torch_results, strict=True)])
    heat_diff = max(np.abs(e.heatmap - t.heatmap).max() for e, t in zip(engine_results, torch_results, strict=True))
    assert heat_diff <= DEFAULT_TOLERANCES[precision].max_heatmap_diff
    if precision == "fp32":
        np.testing.assert_allclose(scores[:, 0], scores[:, 1], rtol=1e-4)
        assert [r.label for r in engine_results] == [r.label for r in torch_results]
    else:
        assert np.corrcoef(scores.T)[0, 1] > 0.95


def test_reduced_precision_graphs_keep_io_types_and_scorer_precision(board_export):
    half = onnx.load(str(board_export("onnx", "fp16")[0] / "model.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for out in half.graph.output)
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)
    bank = next(init for init in half.graph.initializer if init.name == "scorer.memory_bank")
    assert bank.data_type == onnx.TensorProto.FLOAT  # the scorer stays FP32

    quantized = onnx.load(str(board_export("onnx", "int8")[0] / "model.onnx"))
    producers = {out: node for node in quantized.graph.node for out in node.output}

    def int8_inputs(node) -> bool:
        return any(producers.get(name) is not None and producers[name].op_type == "DequantizeLinear"
                   for name in node.input)

    search = [node for node in quantized.graph.node if node.op_type == "MatMul" and int8_inputs(node)]
    assert search and all(producers[node.output[0]].op_type != "DequantizeLinear" for node in search)
    assert all(consumer.op_type == "Add" for node in search for consumer in quantized.graph.node
               if node.output[0] in consumer.input)  # + bank norms, in float
    assert not int8_inputs(producers["heatmap"])  # the heatmap's upsampling product stays float
    argmin = next(node for node in quantized.graph.node if node.op_type == "ArgMin")
    assert not any(int8_inputs(node) for node in quantized.graph.node
                   if node.op_type == "MatMul" and node not in search)  # the neighbour is picked in float
    assert producers[argmin.input[0]].op_type != "DequantizeLinear"
    softmax = next(node for node in quantized.graph.node if node.op_type == "Softmax")
    assert producers[softmax.input[0]].op_type != "DequantizeLinear"  # the reweighting stays float


def test_tampered_bundle_is_refused(board_export, tmp_path):
    folder, _ = board_export("onnx", "fp32")
    copy = shutil.copytree(folder, tmp_path / "tampered")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: SHA-256 mismatch"):
        open_bundle(copy)


def test_parity_failure_names_the_metric_and_leaves_no_bundle(board_exporter, tmp_path):
    from exporters.parity import ParityError, Tolerances

    impossible = Tolerances(max_heatmap_diff=-1.0, min_score_rank_corr=0.0, max_image_auroc_drop=1.0,
                            max_pixel_auroc_drop=1.0)
    with pytest.raises(ParityError, match="max_heatmap_diff"):
        board_exporter.export(tmp_path / "bad", fmt="onnx", precision="fp32", tolerances=impossible)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tar").exists()


def test_cli_parity_failure_exits_non_zero(board_model, tmp_path, capsys):
    from edge_anomaly.cli import main

    folder, _ = board_model
    code = main(["export", str(folder), "--precision", "fp32", "--min-rank-corr", "1.5", "--out", str(tmp_path / "b")])
    assert code != 0
    assert "score_rank_corr" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_unknown_device_profile(board_model, tmp_path, capsys):
    from edge_anomaly.cli import main

    code = main(["export", str(board_model[0]), "--device", "no-such-board", "--out", str(tmp_path / "b")])
    assert code != 0 and "unknown device profile 'no-such-board'" in capsys.readouterr().err


def _elements(dims, batch: int) -> int:
    count = 1
    for dim in dims:
        if dim.dim_param:
            expression = dim.dim_param.replace("batch", str(batch))
            assert re.fullmatch(r"[\d*+ ]+", expression), dim.dim_param
            count *= eval(expression)  # only digits, * and + reach here
        else:
            count *= dim.dim_value
    return count


def test_no_tensor_passes_the_tensorrt_limit_at_max_batch(board_exporter):
    from exporters.onnx_export import TENSOR_ELEMENT_LIMIT

    model = onnx.shape_inference.infer_shapes(onnx.load(str(board_exporter.onnx_trace(None, 32))))
    values = [*model.graph.value_info, *model.graph.output]
    sizes = [_elements(value.type.tensor_type.shape.dim, 32) for value in values]
    assert len(sizes) > 100 and max(sizes) <= TENSOR_ELEMENT_LIMIT
    scorer = board_exporter.model.graph.scorer
    patches = scorer.grid[0] * scorer.grid[1]
    assert max(sizes) >= 32 * patches * min(scorer.chunk_size, scorer.memory_bank.shape[0])  # the block is there


def test_search_chunks_shrink_for_a_large_bank_and_batch(board_model):
    import copy

    import torch

    from exporters.onnx_export import TENSOR_ELEMENT_LIMIT, limit_search_chunks

    graph = copy.deepcopy(board_model[1].graph)
    scorer = graph.scorer
    scorer.memory_bank = torch.zeros(100_000, scorer.memory_bank.shape[1])
    patches = scorer.grid[0] * scorer.grid[1]
    limit_search_chunks(graph, max_batch=4096)
    assert 4096 * patches * scorer.chunk_size <= TENSOR_ELEMENT_LIMIT < 4096 * patches * (scorer.chunk_size + 1)


def test_cli_export_sign_verifies_through_the_runtime_and_a_tampered_manifest_is_refused(board_model, tmp_path,
                                                                                           capsys):
    from edge_anomaly.cli import main
    from runtime.detector import Detector
    from runtime.signing import TrustList, new_key_pair

    private, public, ident = new_key_pair(tmp_path / "keys")
    _, stranger, stranger_id = new_key_pair(tmp_path / "stranger")
    out = tmp_path / "signed"
    assert main(["export", str(board_model[0]), "--precision", "fp32", "--sign", str(private), "--out", str(out)]) == 0
    assert f"signed with key {ident}" in capsys.readouterr().out
    trust = TrustList.load([public])
    archive = out.with_name("signed.tar")
    assert open_bundle(out, trust.verify).manifest.signature.key_id == ident
    detector = Detector.load(archive, backend="onnxruntime", check=trust.verify)  # the .tar twin is signed too
    assert detector.predict(np.zeros((120, 160, 3), np.uint8)).heatmap.shape == (120, 160)
    with pytest.raises(BundleError, match=f"signed by key {ident}, which this station does not trust"):
        Detector.load(archive, backend="onnxruntime", check=TrustList.load([stranger]).verify)
    assert stranger_id != ident

    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))  # other formatting, same content
    assert open_bundle(out, trust.verify).manifest.signature.key_id == ident
    manifest["scoring"]["local"]["threshold"] *= 100  # hashes still match: only the signature can tell
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert open_bundle(out).manifest.scoring.local.threshold == manifest["scoring"]["local"]["threshold"]
    with pytest.raises(BundleError, match=f"signature by key {ident} does not match"):
        Detector.load(out, backend="onnxruntime", check=trust.verify)


def test_write_engine_leaves_only_the_engine_files_and_they_run_as_pytorch_does(board_exporter, board_model, tmp_path):
    """What bench/export.py measures a large graph with: each CPU format's FP32 files, unchecked and unbundled."""
    from runtime.backends import BY_FORMAT, CPU_FORMATS, NATIVE_BACKEND, EngineFiles, is_installed, open_engine

    model = board_model[1]
    images = board_exporter.data.parity.images[:2]
    expected = model.infer(images)
    for fmt in CPU_FORMATS:
        if not is_installed(NATIVE_BACKEND[fmt]):
            continue
        files = board_exporter.write_engine(tmp_path / fmt, fmt)
        assert files == BY_FORMAT[fmt].bundle_files()
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == sorted(files.values())  # no manifest
        engine = open_engine(EngineFiles.of_model(tmp_path / fmt / files["model"], fmt, model.input_size),
                             NATIVE_BACKEND[fmt], threads=2)
        heatmaps, scores = engine.infer(images)
        np.testing.assert_allclose(scores, expected[1], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(heatmaps, expected[0], atol=0.05)  # FP32 rounding: a few cells up to 0.03 off
