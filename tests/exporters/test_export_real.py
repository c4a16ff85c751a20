"""A small real slice of MVTec bottle: fit, export OpenVINO INT8, and check parity on real defects."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.harness.data import BOTTLE, real_category

pytestmark = pytest.mark.slow  # fits and exports on real bottle: not in -m "not slow"


@pytest.fixture(scope="module")
def bottle_slice(tmp_path_factory):
    """24 normal training images and 3 test images per folder, with masks, copied to a temp folder."""
    source = real_category(BOTTLE)
    target = tmp_path_factory.mktemp("bottle-slice") / "bottle"
    for folder, count in [(source / "train" / "good", 24), *[(d, 3) for d in sorted((source / "test").iterdir())]]:
        destination = target / folder.relative_to(source)
        destination.mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:count]:
            shutil.copy(image, destination / image.name)
            mask = source / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            if mask.is_file():
                (target / "ground_truth" / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, target / "ground_truth" / folder.name / mask.name)
    return target


@pytest.mark.slow
def test_openvino_int8_on_real_bottle(bottle_slice, tmp_path):
    pytest.importorskip("openvino")
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model
    from exporters.export import export_bundle

    template, params = load_params("patchcore", overrides=["coreset_ratio=0.05"])
    model = fit_model(bottle_slice, template, params)
    folder, _ = export_bundle(model, tmp_path / "bottle-ov-int8", fmt="openvino", precision="int8")
    parity = json.loads((folder / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["images"]["defective"] == 9
    assert parity["pytorch"]["image_auroc"] > 0.9  # the slice is a real test, not a degenerate one
    assert parity["image_auroc_delta"] >= -0.02 and parity["pixel_auroc_delta"] >= -0.02
    assert parity["score_rank_corr"] >= 0.9
