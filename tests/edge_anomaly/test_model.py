"""Fitting on generated boards, the plain-data model folder, and its integrity checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_anomaly.model import TrainedModel  # noqa: E402
from runtime.bundle import sha256_file  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402
from runtime.scoring import Scoring  # noqa: E402

# model.json as edge-anomaly wrote it before the typed card (schema 1, the capture profile inside info), for the
# same PatchCore settings as the board_model fixture
V1_CARD = Path(__file__).parent / "fixtures" / "model-v1.json"


def test_model_folder_is_plain_data_and_round_trips(board_model):
    folder, model = board_model
    assert sorted(p.name for p in folder.iterdir()) == ["calibration.safetensors", "model.json", "weights.safetensors"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["template"] == "patchcore" and meta["input"]["size"] == [256, 256]
    assert meta["input"]["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert set(meta["scoring"]) == {"local", "lighting", "blur", "global_stats",
                                    "noise", "compression", "capture_stats"}
    assert meta["schema_version"] == 2 and "capture" not in meta["info"]
    assert meta["capture"]["source"] == "stills" and meta["capture"]["suffixes"] == [".png"]
    assert len(meta["info"]["training_set"]["fingerprint"]) == 64
    assert meta["versions"]["edge_anomaly"]

    loaded = TrainedModel.load(folder)
    assert set(meta["files"]) == {"weights.safetensors", "calibration.safetensors"}
    np.testing.assert_array_equal(loaded.calibration_data.normal_scores, model.calibration_data.normal_scores)
    assert loaded.calibration_data.image_stats.shape == (30, 22)
    assert len(loaded.calibration_data.normal_scores) == meta["info"]["calibration"]["n_scores"]
    inputs = np.stack([np.full((256, 256, 3), 90, np.uint8), np.full((256, 256, 3), 150, np.uint8)])
    for original, reloaded in zip(model.infer(inputs), loaded.infer(inputs), strict=True):
        np.testing.assert_allclose(original, reloaded, rtol=1e-5, atol=1e-5)


def test_a_model_saved_before_the_card_loads_with_its_numbers_unchanged(board_model, boards, tmp_path):
    folder, model = board_model
    old = json.loads(V1_CARD.read_text())
    copy = tmp_path / "v1"
    shutil.copytree(folder, copy)
    old["files"] = {name: sha256_file(copy / name) for name in old["files"]}  # the fixture's card on these weights
    (copy / "model.json").write_text(json.dumps(old, indent=2))

    loaded = TrainedModel.load(copy)
    assert loaded.scoring == Scoring.model_validate(old["scoring"])
    assert loaded.scoring.local.threshold == old["scoring"]["local"]["threshold"]  # bit for bit
    assert loaded.scoring.model_dump(mode="json") == old["scoring"]
    assert loaded.capture_profile.model_dump(mode="json") == old["info"]["capture"]
    assert loaded.info == {key: value for key, value in old["info"].items() if key != "capture"}
    assert loaded.params.model_dump(mode="json") == old["params"]
    good = [read_image(p) for p in list_images(boards / "test" / "good")][:2]
    assert [r.score for r in loaded.predict(good)] == [r.score for r in model.predict(good)]

    resaved = json.loads((loaded.save(tmp_path / "v2") / "model.json").read_text())
    assert resaved["schema_version"] == 2 and resaved["capture"] == old["info"]["capture"]
    assert {key: resaved[key] for key in ("scoring", "input", "params", "outputs", "concepts")} == \
        {key: old[key] for key in ("scoring", "input", "params", "outputs", "concepts")}


@pytest.mark.parametrize("change, message", [
    (lambda card: card.update(schema_version=3), "schema_version 3 is newer than this edge-anomaly reads"),
    (lambda card: card.update(format="something-else"), "not an edge-anomaly model"),
    (lambda card: card["scoring"]["local"].update(spread=0), "scoring.local.spread"),
    (lambda card: card["scoring"].pop("blur"), "lighting, blur, global_stats come together"),
    (lambda card: card["input"].update(colour_order="RGB"), "input.colour_order"),
])
def test_a_bad_card_is_refused_naming_the_field(board_model, tmp_path, change, message):
    folder, _ = board_model
    copy = tmp_path / "bad"
    shutil.copytree(folder, copy)
    card = json.loads((copy / "model.json").read_text())
    change(card)
    (copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=message):
        TrainedModel.load(copy)


def test_tampered_weights_are_refused(board_model, tmp_path):
    folder, _ = board_model
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in folder.iterdir():
        copy.joinpath(item.name).write_bytes(item.read_bytes())
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        TrainedModel.load(copy)


def test_predict_flags_defects_and_passes_good_boards(board_model, boards):
    _, model = board_model
    good = [read_image(p) for p in list_images(boards / "test" / "good")]
    results = model.predict(good)
    assert sum(r.label == "normal" for r in results) >= len(good) - 1
    for defect, kind in (("missing_component", "local"), ("too_dark", "lighting"), ("blur", "blur")):
        frames = [read_image(p) for p in list_images(boards / "test" / defect)]
        results = model.predict(frames)
        assert all(r.label == "anomalous" for r in results), defect
        assert [r.kind for r in results] == [kind] * len(frames), defect
        assert results[0].heatmap.shape == frames[0].shape[:2]


def test_heatmap_points_at_the_missing_component(board_model, boards):
    from edge_anomaly.data.folders import read_mask

    _, model = board_model
    path = list_images(boards / "test" / "missing_component")[0]
    result = model.predict([read_image(path)])[0]
    mask = read_mask(boards / "ground_truth" / "missing_component" / f"{path.stem}_mask.png", result.heatmap.shape)
    assert result.heatmap[mask].mean() > 2 * result.heatmap[~mask].mean()


def test_training_folder_errors_are_clear(tmp_path):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    _, params = load_params("patchcore")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images or videos found"):
        fit_model(tmp_path / "empty", "patchcore", params)
    with pytest.raises(FileNotFoundError, match="not found"):
        fit_model(tmp_path / "absent", "patchcore", params)
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.png").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="usable images"):
        fit_model(few, "patchcore", params)
