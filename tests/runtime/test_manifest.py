"""The typed manifest: a version-1 bundle still loads, errors name the field, dump and load agree.

``fixtures/bundle-v1`` is a real version-1 bundle: its manifest.json was written by the
exporter of schema version 1 (an ONNX FP32 export of the generated boards), its model.onnx
replaced by a 293-byte ONNX graph (heatmap = channel mean of the pixels, score = its maximum)
so the fixture stays small; only the file hash under ``files`` was updated to match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import BundleError, open_bundle
from runtime.manifest import SCHEMA_VERSION, StaticBatch, dump, load_manifest, migrate, parse_manifest
from runtime.scoring import Scoring

V1_BUNDLE = Path(__file__).parent / "fixtures" / "bundle-v1"


def _v1() -> dict:
    return json.loads((V1_BUNDLE / "manifest.json").read_text())


def test_a_version_1_bundle_loads_through_migrate_and_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    from runtime.detector import Detector

    assert _v1()["schema_version"] == 1
    bundle = open_bundle(V1_BUNDLE)
    manifest = bundle.manifest
    assert manifest.schema_version == SCHEMA_VERSION == 4
    assert bundle.name == "boards-onnx-fp32" and bundle.input_size == (256, 256)
    engine = manifest.engine
    assert (engine.format, engine.batch.max_batch, engine.batch.static) == ("onnx", 32, False)
    assert manifest.parity.passed and manifest.signature is None and manifest.self_test is None

    detector = Detector.load(V1_BUNDLE, backend="onnxruntime")
    assert type(manifest.scoring) is Scoring and detector.scoring is detector.bundle.manifest.scoring  # one type
    frame = np.full((64, 80, 3), 40, np.uint8)
    frame[10:20, 10:20] = 200
    result = detector.predict(frame)
    assert result.score == pytest.approx(200.0)  # the fixture graph: max over the channel-mean heatmap
    assert result.heatmap.shape == (64, 80)

    # the bundle folder and its .tar twin, as the runtime reads them in the field
    folder = tmp_path / "bundle-v1"
    shutil.copytree(V1_BUNDLE, folder)
    shutil.make_archive(str(tmp_path / "bundle-v1"), "tar", tmp_path, "bundle-v1")
    assert open_bundle(tmp_path / "bundle-v1.tar").manifest == manifest


def test_migrate_makes_version_1_defaults_explicit():
    data = _v1()
    del data["engine"]["batch"]
    assert migrate(data)["engine"]["batch"] == {"dynamic": True, "max": 32}
    data["engine"]["batch"] = {"size": 4}  # version 1 read a batch without "dynamic" as dynamic
    assert migrate(data)["engine"]["batch"] == {"dynamic": True, "max": 32}
    data["engine"]["batch"] = {"dynamic": False, "size": 4}
    assert parse_manifest(data).engine.batch == StaticBatch(size=4)


def test_dump_and_load_agree_and_omit_unset_optional_sections():
    manifest = parse_manifest(_v1())
    text = dump(manifest)
    assert load_manifest(text) == manifest
    written = json.loads(text)
    assert written["schema_version"] == 4
    assert not {"signature", "self_test", "device_profile", "drift_reference", "capture"} & written.keys()
    assert not {"noise", "compression", "capture_stats"} & written["scoring"].keys()
    assert "cpu" not in written["parity"] and "score_alignment" not in written["engine"]
    assert written["input"]["roi"] is None  # explicit in both versions


def test_the_optional_sections_of_later_issues_validate():
    data = {**_v1(), "schema_version": 2,
            "signature": {"algorithm": "ed25519", "key_id": "0123456789abcdef", "value": "c2ln"},
            "self_test": {"images": [{"file": "selftest_0.png", "score": 24.5}], "min_rank_corr": 0.9,
                          "max_score_error": 0.05}}
    data["parity"] = {**data["parity"], "cpu": {"model": "AMD EPYC", "flags": ["avx2", "avx512_vnni"]}}
    manifest = parse_manifest(data)
    assert manifest.signature.key_id == "0123456789abcdef" and manifest.self_test.images[0].score == 24.5
    assert json.loads(dump(manifest))["parity"]["cpu"]["flags"] == ["avx2", "avx512_vnni"]
    assert manifest.drift_reference is None  # a version 2 bundle has none: the station learns it


def test_the_drift_reference_validates_and_round_trips():
    reference = {"levels": [0.0, 0.5, 1.0], "score_quantiles": [0.01, 0.1, 0.4], "n_scores": 209,
                 "global_stats": {"names": ["brightness"], "mean": [0.4], "std": [0.02]}}
    manifest = parse_manifest({**_v1(), "schema_version": 3, "drift_reference": reference})
    assert manifest.drift_reference.score_quantiles == [0.01, 0.1, 0.4]
    assert json.loads(dump(manifest))["drift_reference"] == reference
    with pytest.raises(BundleError, match="drift_reference.score_quantiles: Value error, must be in ascending order"):
        parse_manifest({**_v1(), "schema_version": 3,
                        "drift_reference": {**reference, "score_quantiles": [0.1, 0.01, 0.4]}})


def test_the_capture_sections_validate_and_a_version_3_bundle_reads_without_them():
    capture = {"source": "stills", "suffixes": [".png"], "frame_hw": [512, 512], "noise": 0.6, "blockiness": 1.02}
    scoring = {**_v1()["scoring"], "noise": {"threshold": 2.0, "spread": 1.0},
               "compression": {"threshold": 3.0, "spread": 1.5},
               "capture_stats": {"names": ["noise", "blockiness"], "mean": [0.6, 1.02], "std": [0.25, 0.02]}}
    manifest = parse_manifest({**_v1(), "schema_version": 4, "capture": capture, "scoring": scoring})
    assert manifest.capture.frame_hw == (512, 512) and manifest.scoring.compression.threshold == 3.0
    assert json.loads(dump(manifest))["capture"] == capture
    older = parse_manifest({**_v1(), "schema_version": 3})
    assert older.schema_version == 4 and older.capture is None and older.scoring.noise is None
    with pytest.raises(BundleError, match="capture.source"):
        parse_manifest({**_v1(), "schema_version": 4, "capture": {**capture, "source": "film"}})


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.update(schema_version=5), "schema_version 5 is newer than this edge-anomaly reads (4)"),
    (lambda m: m.update(schema_version="1"), "schema_version '1' is not supported"),
    (lambda m: m.update(format="other"), "format is 'other', expected 'edge-anomaly-bundle'"),
    (lambda m: m.update(colour="red"), "colour: Extra inputs are not permitted"),
    (lambda m: m["engine"].update(format="tflite"), "engine.format: Input should be 'onnx', 'openvino' or 'tensorrt'"),
    (lambda m: m["input"].update(size=[256]), "input.size"),
    (lambda m: m["scoring"]["local"].update(spread=0), "scoring.local.spread: Input should be greater than 0"),
    (lambda m: m["files"].update({"model.onnx": "abc"}), "files.model.onnx: String should match pattern"),
    (lambda m: m.pop("scoring"), "scoring: Field required"),
    (lambda m: m["scoring"].pop("blur"), "scoring: Value error, lighting, blur, global_stats come together"),
    (lambda m: m["scoring"]["global_stats"]["names"].reverse(), "do not match this version of edge-anomaly"),
    (lambda m: m["scoring"]["global_stats"]["mean"].pop(), "expected 22 means and spreads"),
])
def test_bad_manifests_are_refused_naming_the_field(change, expected):
    data = _v1()
    change(data)
    with pytest.raises(BundleError) as caught:
        parse_manifest(data, "b/manifest.json")
    assert str(caught.value).startswith("b/manifest.json: ") and expected in str(caught.value)


def test_an_oversized_or_broken_manifest_file_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "manifest.json").write_text("{" + " " * (5 << 20) + "}")
    with pytest.raises(BundleError, match="too large for a manifest"):
        open_bundle(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json: invalid JSON"):
        open_bundle(folder)
