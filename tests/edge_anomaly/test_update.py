"""Updating a PatchCore model with reviewed normals: the false alarms go, the defects stay, it ships."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # updates, exports and runs a model: not in -m "not slow"

pytest.importorskip("torch")

from edge_anomaly.model import TrainedModel  # noqa: E402
from edge_anomaly.update import update_model  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402


def new_light(frame: np.ndarray) -> np.ndarray:
    """The boards under a warmer, dimmer lamp: what a line might see after a lamp change."""
    shifted = frame.astype(np.float32) * np.array([0.95, 0.88, 0.78], np.float32)
    return np.clip(shifted, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def relit(boards, tmp_path_factory):
    """(reviewed folder of 8 relit training boards, 6 relit test boards held out from the update)."""
    folder = tmp_path_factory.mktemp("reviewed") / "normal"
    folder.mkdir()
    for path in list_images(boards / "train" / "good")[:8]:
        cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.cvtColor(new_light(read_image(path)), cv2.COLOR_RGB2BGR))
    held_out = [new_light(read_image(p)) for p in list_images(boards / "test" / "good")]
    return folder, held_out


@pytest.fixture(scope="module")
def updated(board_model, relit, tmp_path_factory):
    """The board model updated through the command line, as an operator runs it."""
    from edge_anomaly.cli import main

    out = tmp_path_factory.mktemp("updated") / "model"
    assert main(["update", str(board_model[0]), "--add", str(relit[0]), "--out", str(out)]) == 0
    return out


def test_update_passes_the_new_normal_and_keeps_the_defects(board_model, boards, relit, updated):
    _, before = board_model
    after = TrainedModel.load(updated)
    _, held_out = relit
    assert sum(r.is_anomalous for r in before.predict(held_out)) >= len(held_out) - 1  # the lamp change alarms
    assert sum(r.is_anomalous for r in after.predict(held_out)) <= 1
    good = [read_image(p) for p in list_images(boards / "test" / "good")]
    assert sum(r.is_anomalous for r in after.predict(good)) <= 1
    for defect in ("missing_component", "scratch", "too_dark"):
        frames = [read_image(p) for p in list_images(boards / "test" / defect)]
        assert all(r.is_anomalous for r in after.predict(frames)), defect


def test_update_is_recorded_and_keeps_its_calibration(board_model, updated):
    _, before = board_model
    meta = json.loads((updated / "model.json").read_text())
    record = meta["info"]["updates"][-1]
    assert record["n_images"] == 8 and record["bank_entries"][1] > record["bank_entries"][0]
    assert record["threshold"][0] == pytest.approx(before.scoring.local.threshold)
    assert record["threshold"][1] == pytest.approx(meta["scoring"]["local"]["threshold"])
    after = TrainedModel.load(updated)
    assert len(after.calibration_data.normal_scores) == len(before.calibration_data.normal_scores) + 8
    assert len(after.calibration_data.image_stats) == 38
    assert meta["info"]["calibration"]["n_scores"] == len(after.calibration_data.normal_scores)


def test_updated_model_exports_and_runs_in_the_runtime(relit, updated, tmp_path):
    pytest.importorskip("onnxruntime")
    from exporters.export import export_bundle
    from runtime.detector import Detector

    folder, _ = export_bundle(TrainedModel.load(updated), tmp_path / "bundle")
    detector = Detector.load(folder)
    frames = [read_image(p) for p in list_images(relit[0])]
    assert not any(r.is_anomalous for r in detector.predict(frames))


def test_fit_add_fits_then_takes_in_the_reviewed_normals(boards, relit, tmp_path):
    from edge_anomaly.cli import main

    out = tmp_path / "model"
    assert main(["fit", "--data", str(boards), "--template", "patchcore", "--set", "coreset_ratio=0.05",
                 "--set", "input_size=[256, 256]", "--add", str(relit[0]), "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert [record["n_images"] for record in meta["info"]["updates"]] == [8]
    model = TrainedModel.load(out)
    assert len(model.calibration_data.normal_scores) == meta["info"]["calibration"]["n_scores"]
    _, held_out = relit
    assert sum(r.is_anomalous for r in model.predict(held_out)) <= 1  # the new lamp reads as normal


def test_update_refuses_what_it_cannot_do(boards, board_model, relit, tmp_path):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    template, params = load_params("padim", overrides=["input_size=[64, 64]"])
    padim = fit_model(boards, template, params)
    with pytest.raises(ValueError, match="padim model cannot be updated"):
        update_model(padim, relit[0])
    _, model = board_model
    folder = model.save(tmp_path / "old")
    (folder / "calibration.safetensors").unlink()
    meta = json.loads((folder / "model.json").read_text())
    del meta["files"]["calibration.safetensors"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="saved without its calibration scores"):
        update_model(TrainedModel.load(folder), relit[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        update_model(model, tmp_path / "empty")
