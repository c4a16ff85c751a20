"""``export --device`` takes format, precision and shapes from the profile; the bundles run; bench records rows."""

from __future__ import annotations

import re

import numpy as np
import pytest
from device_helpers import intel_core_cpu_here, run_cli

from runtime.detector import Detector
from runtime.image_io import list_images, read_image

pytestmark = pytest.mark.slow  # exports per board profile: not in -m "not slow"


@pytest.fixture(scope="module")
def board_images(boards) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(two good, four defective) real board test images."""
    good = [read_image(p) for p in list_images(boards / "test" / "good")[:2]]
    defects = [read_image(p) for folder in sorted((boards / "test").iterdir()) if folder.name != "good"
               for p in list_images(folder)[:1]][:4]
    return good, defects


def _runs(folder, board_images, **load) -> None:
    """The bundle runs on real images and ranks every defect above every good board."""
    good, defects = board_images
    results = Detector.load(folder.with_name(folder.name + ".tar"), **load).predict(good + defects)
    assert all(r.heatmap.shape == image.shape[:2] for r, image in zip(results, good + defects, strict=True))
    scores = [r.score for r in results]
    assert max(scores[:2]) < min(scores[2:]), scores


# generic-x86-64 exports FP32: ONNX Runtime's INT8 is no faster there, with or without VNNI.
@pytest.mark.parametrize("profile, fmt, backend", [("intel-core-cpu", "openvino", "openvino"),
                                                   ("generic-x86-64", "onnx", "onnxruntime")])
def test_profile_export_gives_its_format_precision_and_shapes(device_export, board_images, profile, fmt, backend):
    flags, precision = intel_core_cpu_here() if profile == "intel-core-cpu" else ((), "fp32")
    folder, manifest = device_export(profile, *flags)
    engine = manifest["engine"]
    assert (engine["format"], engine["precision"]) == (fmt, precision)
    assert ("int8_recipe" in engine) == (precision == "int8")
    assert engine["batch"] == {"dynamic": True, "max": 16}
    assert manifest["device_profile"] == profile
    _runs(folder, board_images, backend=backend, device="CPU", threads=2)


def test_npu_profile_gives_static_shapes_and_flags_override_it(device_export, board_images):
    folder, manifest = device_export("intel-core-ultra-npu", "--precision", "fp16")  # no NPU here: run on CPU
    engine = manifest["engine"]
    assert (engine["format"], engine["precision"]) == ("openvino", "fp16")
    assert engine["batch"] == {"dynamic": False, "size": 1}
    assert engine["inputs"][0]["shape"] == [1, 256, 256, 3]
    _runs(folder, board_images, backend="openvino", device="CPU")


def test_a_model_input_beyond_the_profile_is_refused(board_model, tmp_path):
    code, output = run_cli("export", str(board_model[0]), "--device", "intel-atom-celeron", "--out",
                           str(tmp_path / "b"))
    assert code == 2 and not (tmp_path / "b").exists()
    assert "'intel-atom-celeron'" in output and "max_side 224" in output and "input side 256" in output


def test_bench_records_measured_rows_per_profile(device_export, tmp_path):
    folder, _ = device_export("generic-x86-64")
    results = tmp_path / "results"
    for _ in range(2):
        code, output = run_cli("bench", str(folder), "--device", "generic-x86-64", "--record", "--results",
                               str(results), "--frames", "3", "--warmup", "1", "--frame-size", "640x480")
        assert code == 0, output
    table = (results / "generic-x86-64.md").read_text()
    assert "no measured rows yet" not in table
    rows = [line for line in table.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[2:9] == [folder.name, "onnx fp32", "onnxruntime / CPU", "sequential", "1", "4", "640x480"]
    median, p95, fps, rss = (float(cell) for cell in cells[9:13])
    assert 0 < median <= p95 and fps > 0 and rss > 50
    assert re.fullmatch(r"[+-]\d\.\d{4} / [+-]\d\.\d{4}", cells[13])


def test_bench_record_needs_a_profile(board_bundle):
    code, output = run_cli("bench", str(board_bundle[0]), "--device", "CPU", "--record", "--frames", "1")
    assert code == 2 and "--record needs --device PROFILE" in output
