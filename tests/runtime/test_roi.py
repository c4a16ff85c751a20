"""The inspected region's rules (``runtime.roi``): a ROI of four pixel integers, strictly, and a centre crop in (0, 1],
wherever one is read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import MANIFEST, BundleError, open_bundle
from runtime.roi import check_roi

FIXTURE = Path(__file__).parent / "fixtures" / "bundle-v1"


@pytest.mark.parametrize("roi", ["[true, 0, 16, 16]", "[0, 0, 16.0, 16]", "[0, 0, 16.5, 16]", '["0", 0, 16, 16]'])
def test_a_bundle_whose_manifest_roi_is_not_four_integers_fails_to_load_naming_input_roi(tmp_path, roi):
    folder = tmp_path / "bundle"
    shutil.copytree(FIXTURE, folder)
    text = (folder / MANIFEST).read_text()
    assert text.count('"roi": null') == 1
    (folder / MANIFEST).write_text(text.replace('"roi": null', f'"roi": {roi}'))  # as a hand or a tool writes it
    written = json.loads(roi)
    with pytest.raises(BundleError) as caught:
        open_bundle(folder)
    assert str(caught.value) == (f"{folder / MANIFEST}: invalid bundle manifest:\n  input.roi: Value error, "
                                 f"roi must be four integers [x, y, width, height], got {written!r}")  # the value once


@pytest.mark.parametrize("center_crop", ["1.5", "0", "true"])
def test_a_bundle_whose_manifest_center_crop_is_out_of_range_fails_to_load_naming_input_center_crop(tmp_path,
                                                                                                    center_crop):
    folder = tmp_path / "bundle"
    shutil.copytree(FIXTURE, folder)
    text = (folder / MANIFEST).read_text()
    assert text.count('"center_crop": null') == 1
    (folder / MANIFEST).write_text(text.replace('"center_crop": null', f'"center_crop": {center_crop}'))
    written = json.loads(center_crop)
    with pytest.raises(BundleError) as caught:  # by the manifest's parse, before any engine starts
        open_bundle(folder)
    assert str(caught.value) == (f"{folder / MANIFEST}: invalid bundle manifest:\n  input.center_crop: Value error, "
                                 f"center_crop must be a fraction in (0, 1] of the shorter side, got {written!r}")


@pytest.mark.parametrize("roi", [[True, 0, 16, 16], [0, False, 16, 16], [0, 0, 1.0, 16], [0, 0, 16, 1.5],
                                 ["0", 0, 16, 16], 5, "0016", {0: 0, 1: 0, 2: 16, 3: 16}, [0, 0, 16]])
def test_check_roi_takes_only_four_integers(roi):
    with pytest.raises(ValueError) as caught:
        check_roi(roi, "--roi")
    assert str(caught.value) == f"--roi must be four integers [x, y, width, height], got {roi!r}"


def test_check_roi_takes_numpy_integers_and_returns_python_ints():
    region = check_roi(np.array([8, 4, 160, 128]))
    assert region == (8, 4, 160, 128) and all(type(v) is int for v in region)


def test_the_manifest_types_load_without_numpy():
    code = "import sys, runtime.manifest; print(sorted({'numpy', 'cv2'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]"
