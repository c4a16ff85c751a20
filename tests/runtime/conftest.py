"""Fixtures for the runtime tests: the board frames and a small real bottle model (the board bundles in each engine
format, shared with the fault suite, are in tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.harness.data import BOTTLE, read_rgb, real_category


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
    real_category(BOTTLE)
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
