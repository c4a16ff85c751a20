"""The bundle's self-test at every load: it passes where the bundle was made, and a bundle whose
engine answers differently on this CPU (faked here: its stored scores moved) is refused or reported."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from runtime.bundle import BundleError
from runtime.cpu import local_cpu
from runtime.detector import Detector
from runtime.self_test import SelfTestError, rank_corr

AVX2_BOX = {"model": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "flags": ["avx2"]}


def _faked(board_bundle, tmp_path, change) -> tuple:
    """A copy of the board bundle whose manifest says it was exported on an AVX2 box that scored
    its self-test images as ``change(scores)`` (the manifest is plain data, its files unchanged)."""
    folder = tmp_path / "faked"
    shutil.copytree(board_bundle[0], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    scores = np.array([entry["score"] for entry in manifest["self_test"]["images"]])
    for entry, score in zip(manifest["self_test"]["images"], change(scores, manifest), strict=True):
        entry["score"] = float(score)
    manifest["parity"]["cpu"] = AVX2_BOX
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, manifest


def test_an_exported_bundle_carries_a_self_test_that_passes_here(board_bundle, caplog):
    manifest = json.loads((board_bundle[0] / "manifest.json").read_text())
    test = manifest["self_test"]
    assert len(test["images"]) == 8 and all(entry["file"] in manifest["files"] for entry in test["images"])
    assert manifest["parity"]["cpu"] == local_cpu().model_dump(mode="json")
    with caplog.at_level(logging.INFO, logger="runtime.self_test"):
        report = Detector.load(board_bundle[1]).self_test  # the .tar: the PNGs travel inside it
    assert report.passed and report.rank_corr == 1.0 and report.max_score_error < 1e-3
    assert report.local_cpu == local_cpu().model_dump(mode="json")
    # One short line per load: the bundle's name, not the .tar's temporary folder, and no CPU flags.
    (line,) = [record.getMessage() for record in caplog.records if "self-test" in record.getMessage()]
    assert line.startswith(f"bundle {manifest['name']}: self-test passed on 8 images")
    assert "edge-anomaly-bundle-" not in line and "avx" not in line and len(line) < 160


def test_scores_that_moved_are_refused_naming_both_cpus(board_bundle, tmp_path):
    # As a saturating INT8 kernel would: half a spread up on half the images.
    folder, _ = _faked(board_bundle, tmp_path, lambda scores, manifest: scores + np.arange(len(scores)) % 2
                       * 0.5 * manifest["scoring"]["local"]["spread"])
    with pytest.raises(SelfTestError) as refused:
        Detector.load(folder)
    message = str(refused.value)
    assert "self-test FAILED on 8 images" in message and "largest score error 0.500 spreads (max 0.02)" in message
    assert "i7-8700" in message and "avx2" in message and local_cpu().model in message
    assert "--target-isa" in message


def _rank_reversed(scores: np.ndarray, manifest: dict) -> np.ndarray:
    """The same scores with their ranking reversed (the highest where the lowest was): rank correlation -1."""
    order = np.argsort(scores)
    reversed_scores = np.empty_like(scores)
    reversed_scores[order] = scores[order[::-1]]
    return reversed_scores


def test_warn_mode_loads_and_reports(board_bundle, tmp_path, caplog):
    folder, _ = _faked(board_bundle, tmp_path, _rank_reversed)
    with caplog.at_level(logging.WARNING, logger="runtime.self_test"):
        detector = Detector.load(folder, self_test="warn")
    report = detector.self_test
    assert not report.passed and report.rank_corr < 0 and report.export_cpu == AVX2_BOX
    assert "self-test FAILED" in caplog.text
    assert detector.predict(np.zeros((256, 320, 3), np.uint8)).score >= 0  # and it still runs


def test_a_tampered_self_test_image_is_refused_by_its_hash(board_bundle, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(board_bundle[0], folder)
    (folder / "selftest_0.png").write_bytes((folder / "selftest_1.png").read_bytes())
    with pytest.raises(BundleError, match="selftest_0.png: SHA-256 mismatch"):
        Detector.load(folder)


def test_rank_corr():
    assert rank_corr(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert rank_corr(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
