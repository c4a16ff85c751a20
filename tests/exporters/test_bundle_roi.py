"""Writing a bundle applies the manifest's rules, so a bad manifest fails at export rather than on the edge box."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporters.bundle import write_bundle
from runtime.bundle import MANIFEST, BundleError, open_bundle

FIXTURE = Path(__file__).parents[1] / "runtime" / "fixtures" / "bundle-v1"


def _folder(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the fixture bundle's files without its manifest, and that manifest to write."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copy(FIXTURE / "model.onnx", folder)
    return folder, json.loads((FIXTURE / MANIFEST).read_text())


@pytest.mark.parametrize(("roi", "message"), [
    ([0, 0, -5, 10], r"input\.roi: .*roi \[0, 0, -5, 10\] must be \[x >= 0, y >= 0, width > 0, height > 0\]"),
    ([-1, 0, 5, 10], r"input\.roi: .*roi \[-1, 0, 5, 10\] must be"),
    ([0, 0, 5], r"input\.roi: .*roi must be four integers \[x, y, width, height\], got \[0, 0, 5\]"),
    ([0, 0, 2.5, 10], r"input\.roi: .*four integers .*got \[0, 0, 2\.5, 10\]"),
    ([True, 0, 5, 10], r"input\.roi: .*four integers .*got \[True, 0, 5, 10\]"),  # not read as [1, 0, 5, 10]
    ([0, 0, 5.0, 10], r"input\.roi: .*four integers .*got \[0, 0, 5\.0, 10\]"),
])
def test_a_bad_roi_fails_when_the_bundle_is_written_naming_the_field_and_value(tmp_path, roi, message):
    folder, manifest = _folder(tmp_path)
    manifest["input"]["roi"] = roi
    with pytest.raises(BundleError, match=rf"{folder / MANIFEST}: invalid bundle manifest:\n  {message}"):
        write_bundle(folder, manifest)
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # no manifest written
    assert not folder.with_name("bundle.tar").exists()  # and no tar packed


@pytest.mark.parametrize("center_crop", [1.5, 0, -0.5, True, "0.5"])
def test_a_bad_center_crop_fails_when_the_bundle_is_written_naming_the_field_and_value(tmp_path, center_crop):
    folder, manifest = _folder(tmp_path)
    manifest["input"]["center_crop"] = center_crop
    with pytest.raises(BundleError, match=rf"{folder / MANIFEST}: invalid bundle manifest:\n  input\.center_crop: "
                       rf".*center_crop must be a fraction in \(0, 1\] of the shorter side, got {center_crop!r}"):
        write_bundle(folder, manifest)
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]


def test_a_good_roi_is_written_as_four_integers_and_opens(tmp_path):
    folder, manifest = _folder(tmp_path)
    manifest["input"]["roi"] = [8, 4, 160, 128]
    _, archive = write_bundle(folder, manifest)
    assert json.loads((folder / MANIFEST).read_text())["input"]["roi"] == [8, 4, 160, 128]
    assert open_bundle(archive).manifest.input.roi == (8, 4, 160, 128)
