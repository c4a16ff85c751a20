"""TensorRT: built and checked where an NVIDIA GPU and the tensorrt package are present."""

from __future__ import annotations

import importlib.util
import json

import pytest


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT export needs the tensorrt package (pip install 'edge-anomaly[tensorrt]') and an NVIDIA GPU"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT export needs an NVIDIA GPU and a CUDA build of PyTorch; none here"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_bundle(board_export, precision):
    reason = _gpu_reason()
    if reason:
        pytest.skip(reason)
    folder, _ = board_export("tensorrt", precision)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.engine", "model.onnx"} | {f"selftest_{index}.png" for index in range(8)}
    assert manifest["parity"]["passed"]


def test_tensorrt_without_the_package_says_how_to_get_it(board_exporter, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here; the missing-package message cannot be shown")
    with pytest.raises(RuntimeError, match=r"pip install \"edge-anomaly\[tensorrt\]\""):
        board_exporter.export(tmp_path / "trt", fmt="tensorrt", precision="fp16")
    assert not (tmp_path / "trt").exists()
