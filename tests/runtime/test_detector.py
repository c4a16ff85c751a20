"""The runtime Detector against the PyTorch model, on frames as cameras deliver them."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from runtime.bundle import BundleError
from runtime.detector import Detector


def _agree(results, reference, score_rtol: float, heatmap_atol: float) -> None:
    assert [r.label for r in results] == [r.label for r in reference]
    np.testing.assert_allclose([r.score for r in results], [r.score for r in reference], rtol=score_rtol)
    for result, expected in zip(results, reference, strict=True):
        assert result.heatmap.shape == expected.heatmap.shape
        np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=heatmap_atol)
        assert result.kind == expected.kind


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_detector_agrees_with_pytorch_on_boards(board_exports, board_model, board_frames, fmt):
    _, model = board_model
    detector = Detector.load(board_exports(fmt))
    assert detector.backend.name == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
    results = detector.predict(board_frames)
    _agree(results, model.predict(board_frames), score_rtol=1e-3, heatmap_atol=2e-3)
    # the set is not degenerate: normal, local, lighting and blur verdicts all occur
    assert [r.kind for r in results] == [None, None, "local", "local", "lighting", "blur"]
    assert all(r.latency_ms > 0 for r in results)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_one_detector_serves_cameras_on_several_threads(board_exports, board_frames, fmt):
    """Cameras with the same bundle settings share one Detector (the station loads it once): calls from
    several threads at once must each get their own frame's answer, never an error (OpenVINO's single
    infer request answered "Infer Request is busy")."""
    from concurrent.futures import ThreadPoolExecutor

    detector = Detector.load(board_exports(fmt))
    expected = [r.score for r in detector.predict(board_frames)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda index: (index, detector.predict([board_frames[index]])[0].score),
                                [i % len(board_frames) for i in range(24)]))
    for index, score in answers:
        assert score == pytest.approx(expected[index], rel=1e-4), index


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_detector_agrees_with_pytorch_on_real_bottle(bottle, fmt):
    model, bundles, frames = bottle
    results = Detector.load(bundles[fmt]).predict(frames)
    _agree(results, model.predict(frames), score_rtol=1e-3, heatmap_atol=2e-3)
    # 16 training images calibrate a tight threshold, so judge the slice by ranking: every defect above every good
    assert min(r.score for r in results[2:]) > max(r.score for r in results[:2])
    assert all(r.heatmap.shape == (512, 512) for r in results)


def test_bgr_gray_sixteen_bit_and_alpha_frames_give_the_rgb_verdict(board_bundle, board_frames):
    detector = Detector.load(board_bundle[0])
    rgb = board_frames[2]
    expected = detector.predict(rgb)
    assert detector.predict(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), color_order="BGR").score == pytest.approx(
        expected.score, rel=1e-6)
    assert detector.predict(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), color_order="BGR").score == pytest.approx(
        expected.score, rel=1e-6)
    assert detector.predict(rgb.astype(np.uint16) * 257).score == pytest.approx(expected.score, rel=1e-6)
    assert detector.predict(rgb.astype(np.float32) / 255).score == pytest.approx(expected.score, rel=1e-6)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    as_rgb = detector.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    for frame in (gray, gray[:, :, None], gray.astype(np.uint16) * 257):
        result = detector.predict(frame)
        assert result.score == pytest.approx(as_rgb.score, rel=1e-6) and result.heatmap.shape == gray.shape
    with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
        detector.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="color_order"):
        detector.predict(rgb, color_order="RGBX")


def test_roi_and_center_crop_map_the_heatmap_back_into_the_frame(board_bundle, board_frames):
    detector = Detector.load(board_bundle[0])
    board = board_frames[2]  # a scratched board, 320x256
    frame = np.zeros((400, 600, 3), np.uint8)
    frame[100:356, 200:520] = board  # the board sits at x=200, y=100 in a bigger frame

    result = detector.predict(frame, roi=[200, 100, 320, 256])
    alone = detector.predict(board)
    assert result.heatmap.shape == (400, 600)
    np.testing.assert_array_equal(result.heatmap[100:356, 200:520], alone.heatmap)
    inside = np.zeros((400, 600), bool)
    inside[100:356, 200:520] = True
    assert not result.heatmap[~inside].any()  # 0 outside the ROI
    assert result.score == alone.score

    # centre crop of 0.5 inside that ROI: a 128x128 square at x=200+96, y=100+64
    cropped = detector.predict(frame, roi=[200, 100, 320, 256], center_crop=0.5)
    square = detector.predict(board[64:192, 96:224])
    np.testing.assert_array_equal(cropped.heatmap[164:292, 296:424], square.heatmap)
    assert np.count_nonzero(cropped.heatmap) == np.count_nonzero(square.heatmap) > 128 * 100
    assert cropped.score == square.score

    with pytest.raises(ValueError, match=r"roi \[500, 100, 320, 256\] lies outside the 600x400 frame"):
        detector.predict(frame, roi=[500, 100, 320, 256])
    with pytest.raises(ValueError, match="center_crop"):
        detector.predict(frame, center_crop=1.5)


def test_roi_from_the_manifest_and_a_bad_one_named(board_bundle, board_frames, tmp_path):
    from exporters.bundle import write_bundle

    folder = tmp_path / "with-roi"
    shutil.copytree(board_bundle[0], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["roi"] = [0, 0, 160, 128]
    write_bundle(folder, manifest)
    detector = Detector.load(folder)
    frame = board_frames[2]
    assert detector.predict(frame).score == detector.predict(frame[:128, :160], roi=None).score
    assert Detector.load(folder, roi=[0, 0, 320, 256]).predict(frame).score == Detector.load(
        board_bundle[0]).predict(frame).score  # the call's ROI overrides the manifest's

    manifest["input"]["roi"] = [0, 0, -5, 10]  # refused by the writer (tests/exporters/test_bundle_roi.py); by hand:
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: invalid bundle manifest:\n  input\.roi: .*\[0, 0, -5, 10\]"):
        Detector.load(folder)


def test_static_batch_bundle_pads_and_batches_match_single_frames(board_exports, board_frames):
    detector = Detector.load(board_exports("openvino", batch=2))
    assert (detector.backend.max_batch, detector.backend.static_batch) == (2, True)
    batched = detector.predict(board_frames[:5])  # 2 + 2 + 1 padded
    singles = [detector.predict(frame) for frame in board_frames[:5]]
    np.testing.assert_allclose([r.score for r in batched], [r.score for r in singles], rtol=1e-5)
    assert detector.predict([]) == []


def test_backend_choice_by_format_and_clear_errors(board_bundle, board_exports, board_frames):
    onnx_folder = board_bundle[0]
    reference = Detector.load(onnx_folder).predict(board_frames[0])
    through_openvino = Detector.load(onnx_folder, backend="openvino")  # OpenVINO reads the ONNX file
    assert through_openvino.backend.name == "openvino"
    assert through_openvino.predict(board_frames[0]).score == pytest.approx(reference.score, rel=1e-4)
    with pytest.raises(BundleError, match="onnxruntime backend cannot run a openvino bundle"):
        Detector.load(board_exports("openvino"), backend="onnxruntime")
    with pytest.raises(BundleError, match="tensorrt backend cannot run a onnx bundle"):
        Detector.load(onnx_folder, backend="tensorrt")
    with pytest.raises(ValueError, match=r"OpenVINO device 'NOSUCH' is not available here \(available: CPU"):
        Detector.load(board_exports("openvino"), device="NOSUCH")
    with pytest.raises(ValueError, match="backend 'tflite'"):
        Detector.load(onnx_folder, backend="tflite")


@pytest.mark.gpu
def test_tensorrt_backend_on_a_gpu(board_model, board_frames, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU)")
    pytest.importorskip("cuda", reason="cuda-python is not installed")
    from exporters.export import export_bundle

    folder, _ = export_bundle(board_model[1], tmp_path / "trt", fmt="tensorrt", precision="fp16")
    detector = Detector.load(folder)
    assert detector.backend.name == "tensorrt"
    results = detector.predict(board_frames)
    reference = board_model[1].predict(board_frames)
    assert [r.label for r in results] == [r.label for r in reference]
    np.testing.assert_allclose([r.score for r in results], [r.score for r in reference], rtol=2e-2)


def test_openvino_pins_the_inference_precision_the_bundle_was_checked_in(board_exports, tmp_path):
    """f32 by default (not the bf16 a BF16 CPU would pick); bf16 for a bf16 bundle; anything else named."""
    from exporters.bundle import write_bundle

    assert Detector.load(board_exports("openvino")).backend.compiled.get_property("INFERENCE_PRECISION_HINT") \
        .to_string() == "f32"
    folder = tmp_path / "bf16"
    shutil.copytree(board_exports("openvino"), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["engine"].update(precision="bf16", inference_precision="bf16")
    write_bundle(folder, manifest)
    hint = Detector.load(folder, self_test="warn").backend.compiled.get_property("INFERENCE_PRECISION_HINT")
    from runtime.cpu import local_cpu

    assert hint.to_string() == ("bf16" if local_cpu().has_bf16 else "f32")  # OpenVINO falls back where BF16 is absent
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["engine"]["inference_precision"] = "f8"
    (folder / "manifest.json").write_text(json.dumps(manifest))  # the typed manifest refuses to write it
    with pytest.raises(BundleError, match=r"engine.inference_precision: Input should be 'f32' or 'bf16' \(got 'f8'\)"):
        Detector.load(folder)
