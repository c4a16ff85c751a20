"""Shared fixtures: a small generated board set, a model fitted on it, its bundles, and the real data."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config) -> None:
    """The training side's allocator setting, as its commands run (edge_anomaly/memory.py): the fits here are faster.
    The machine's kept PyTorch rate (edge_anomaly/autoconfig/machine_rate.py) goes to a folder of this run's own,
    not the user's cache."""
    from edge_anomaly.memory import keep_freed_memory

    keep_freed_memory()
    os.environ["EDGE_ANOMALY_CACHE"] = tempfile.mkdtemp(prefix="edge-anomaly-cache-")


@pytest.fixture(scope="session")
def boards(tmp_path_factory) -> Path:
    """A small synthetic circuit-board category in the MVTec layout."""
    pytest.importorskip("torch")
    from edge_anomaly.data.synthetic import generate_boards

    return generate_boards(tmp_path_factory.mktemp("boards"), n_train=30, n_test_good=6, n_per_defect=3,
                           size=(320, 256), seed=1)


@pytest.fixture(scope="session")
def board_model(boards, tmp_path_factory):
    """(model folder, TrainedModel): PatchCore with a 5% coreset, fitted once per session.

    30 training images cannot hold a 1 % false-alarm rate without a threshold so cautious that
    faint defects pass, so this small fixture targets 5 %."""
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    template, params = load_params("patchcore", overrides=["coreset_ratio=0.05", "input_size=[256, 256]",
                                                                "false_alarm_rate=0.05"])
    model = fit_model(boards, template, params)
    folder = model.save(tmp_path_factory.mktemp("models") / "boards-patchcore")
    return folder, model


@pytest.fixture(scope="session")
def board_bundle(board_model, tmp_path_factory):
    """(bundle folder, tar path): the board model exported as an ONNX FP32 bundle."""
    pytest.importorskip("onnxruntime")
    from exporters.export import export_bundle

    _, model = board_model
    return export_bundle(model, tmp_path_factory.mktemp("bundles") / "boards-onnx-fp32")


@pytest.fixture(scope="session")
def board_exports(board_bundle, tmp_path_factory):
    """``board_exports(fmt, batch=None)`` -> FP32 bundle folder of the board model.

    "onnx" is the session's ONNX bundle; "openvino" is its ONNX converted with OpenVINO's own
    converter (no second trace), with a fixed batch when ``batch`` is given.
    """
    pytest.importorskip("openvino")
    import openvino as ov

    from exporters.bundle import write_bundle

    root = tmp_path_factory.mktemp("runtime-bundles")
    made: dict = {("onnx", None): board_bundle[0]}
    manifest = json.loads((board_bundle[0] / "manifest.json").read_text())

    def export(fmt: str, batch: int | None = None) -> Path:
        if (fmt, batch) not in made:
            folder = root / f"{fmt}-{batch or 'dynamic'}"
            folder.mkdir()
            model = ov.convert_model(str(board_bundle[0] / "model.onnx"))
            height, width = manifest["input"]["size"]
            if batch:
                model.reshape([batch, height, width, 3])
            ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
            engine = {**manifest["engine"], "format": "openvino",
                      "files": {"model": "model.xml", "weights": "model.bin"},
                      "batch": {"dynamic": False, "size": batch} if batch else manifest["engine"]["batch"]}
            for image in board_bundle[0].glob("selftest_*.png"):  # the same model: its self-test still holds
                (folder / image.name).write_bytes(image.read_bytes())
            write_bundle(folder, {**manifest, "engine": engine, "name": folder.name})
            made[fmt, batch] = folder
        return made[fmt, batch]

    return export
