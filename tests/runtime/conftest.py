"""Fixtures for the runtime tests: board bundles in each engine format and a small real bottle model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runtime_test_data import BOTTLE, read_rgb


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


@pytest.fixture(scope="session")
def board_frames(boards) -> list[np.ndarray]:
    """Two normal and four defective board test images (RGB, 320x256)."""
    from runtime.image_io import list_images

    paths = list_images(boards / "test" / "good")[:2] + list_images(boards / "test" / "scratch")[:2]
    paths += list_images(boards / "test" / "too_dark")[:1] + list_images(boards / "test" / "blur")[:1]
    return read_rgb(paths)


@pytest.fixture(scope="session")
def bottle(tmp_path_factory):
    """(TrainedModel, {"onnx": bundle, "openvino": bundle}, test frames) for PatchCore fitted on 16
    real bottle images; the frames are 2 good and 1 of each defect type, 512x512 RGB."""
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"real data not present at {BOTTLE} (see ../shared/data/README.md)")
    pytest.importorskip("openvino")
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model
    from exporters.export import ModelExporter
    from runtime.image_io import list_images

    train = tmp_path_factory.mktemp("bottle-train")
    for path in list_images(BOTTLE / "train" / "good")[:16]:
        (train / path.name).write_bytes(path.read_bytes())
    template, params = load_params("patchcore", overrides=["coreset_ratio=0.05"])
    model = fit_model(train, template, params)
    root = tmp_path_factory.mktemp("bottle-bundles")
    with ModelExporter(model, calibration_data=train) as exporter:
        bundles = {fmt: exporter.export(root / f"bottle-{fmt}", fmt=fmt)[0] for fmt in ("onnx", "openvino")}
    paths = list_images(BOTTLE / "test" / "good")[:2]
    paths += [list_images(folder)[0] for folder in sorted((BOTTLE / "test").iterdir()) if folder.name != "good"]
    return model, bundles, read_rgb(paths)
