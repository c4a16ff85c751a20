"""Shared fixtures: a small generated board set, a model fitted on it, and the real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BOTTLE = SHARED_DATA / "mvtec_ad" / "bottle"
MAGNETIC_TILE = SHARED_DATA / "mtd" / "magnetic_tile"


def pytest_configure(config) -> None:
    """The training side's allocator setting, as its commands run (edge_anomaly/memory.py): the fits here are faster.
    The machine's kept PyTorch rate (edge_anomaly/autoconfig/machine_rate.py) goes to a folder of this run's own,
    not the user's cache."""
    from edge_anomaly.memory import keep_freed_memory

    keep_freed_memory()
    os.environ["EDGE_ANOMALY_CACHE"] = tempfile.mkdtemp(prefix="edge-anomaly-cache-")


def real_category(path: Path) -> Path:
    """The category folder, or skip the test with the reason when the shared data is absent."""
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"real data not present at {path} (see ../shared/data/README.md)")
    return path


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
