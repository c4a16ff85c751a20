"""Every board profile validates; a typo is named with its file; ``edge-anomaly devices`` lists them all."""

from __future__ import annotations

import json
import shutil

import pytest
from device_helpers import run_cli

from devices import FOLDER, ProfileError, list_profiles, load_profile
from devices.profile import RUNS, read_profile
from exporters.commands import device_export_settings

BOARDS = {"jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "intel-core-cpu", "intel-iris-xe-igpu",
          "intel-core-ultra-npu", "intel-atom-celeron", "generic-x86-64", "generic-arm64"}


def test_every_profile_validates_and_the_station_example_is_not_one():
    profiles = {profile.name: profile for profile in list_profiles()}
    assert set(profiles) == BOARDS
    for profile in profiles.values():
        assert profile.export.format in RUNS[profile.runtime.backend]
        assert profile.limits and profile.install.pip_command.startswith("pip install")
    jetson = profiles["jetson-orin-nano"]
    assert (jetson.export.format, jetson.runtime.fallback.backend, jetson.runtime.fallback.device) == (
        "tensorrt", "onnxruntime", "CUDA")
    assert "--system-site-packages" in jetson.install.venv_flags
    npu = profiles["intel-core-ultra-npu"]
    assert npu.export.static and npu.runtime.device == "NPU"
    assert profiles["intel-atom-celeron"].input.max_side <= 256
    with pytest.raises(ProfileError, match="unknown device profile 'station'"):
        load_profile("station")


def test_a_typo_is_refused_naming_the_field_and_the_file(tmp_path):
    typo = tmp_path / "intel-core-cpu.yaml"
    typo.write_text((FOLDER / "intel-core-cpu.yaml").read_text().replace("threads: 4", "thread: 4"))
    with pytest.raises(ProfileError) as caught:
        read_profile(typo)
    assert str(typo) in str(caught.value) and "runtime.thread" in str(caught.value)
    assert "Extra inputs are not permitted" in str(caught.value)


def test_a_profile_whose_engine_cannot_run_its_export_is_refused(tmp_path):
    wrong = tmp_path / "generic-x86-64.yaml"
    shutil.copyfile(FOLDER / "generic-x86-64.yaml", wrong)
    wrong.write_text(wrong.read_text().replace("format: onnx", "format: openvino"))
    with pytest.raises(ProfileError, match="runtime.backend 'onnxruntime' cannot run export.format 'openvino'"):
        read_profile(wrong)


def test_export_settings_come_from_the_profile():
    assert device_export_settings("intel-core-ultra-npu") == {
        "format": "openvino", "precision": "int8", "batch": 1, "static": True, "max_batch": 1, "isa": None,
        "precision_by_isa": {}}


@pytest.mark.parametrize("flags, isa, precision", [
    ({}, "avx512_vnni", "int8"),  # the profile's ISA and precision
    ({"isa": "avx2"}, "avx2", "fp32"),  # an AVX2 Core: INT8 brings no speed there, FP32 is the default
    ({"isa": "avx2", "precision": "int8"}, "avx2", "int8"),  # a flag still wins
    ({"isa": "amx"}, "amx", "int8"),
])
def test_intel_core_profile_picks_the_precision_for_the_target_isa(flags, isa, precision):
    from exporters.commands import export_settings

    settings = export_settings("intel-core-cpu", flags)
    assert (settings["format"], settings["isa"], settings["precision"]) == ("openvino", isa, precision)


def test_cpu_profiles_name_their_instruction_set_and_a_bad_one_is_refused(tmp_path):
    isas = {profile.name: profile.export.isa for profile in list_profiles()}
    assert isas["intel-core-cpu"] == "avx512_vnni" and isas["generic-x86-64"] == "avx2"
    assert isas["generic-arm64"] == "arm64" and isas["jetson-orin-nano"] is None
    wrong = tmp_path / "intel-core-cpu.yaml"
    wrong.write_text((FOLDER / "intel-core-cpu.yaml").read_text().replace("isa: avx512_vnni", "isa: avx1024"))
    with pytest.raises(ProfileError, match="export.isa"):
        read_profile(wrong)


def test_devices_command_lists_all_nine():
    code, output = run_cli("devices")
    assert code == 0
    for name in BOARDS:
        assert name in output
    assert 'pip install "edge-anomaly[openvino,daemon]"' in output
    code, output = run_cli("devices", "--json")
    listed = json.loads(output)
    assert code == 0 and {p["name"] for p in listed} == BOARDS
    assert all(p["pip_command"] and p["limits"] for p in listed)


@pytest.mark.parametrize("isa", ["avx2", "avx512", "avx_vnni", "avx512_vnni", "amx"])
def test_no_profile_picks_onnx_runtime_int8_on_an_x86_cpu(isa):
    # ONNX Runtime's INT8 PatchCore measured no faster than its FP32 on VNNI CPUs (devices/generic-x86-64.yaml)
    from exporters.commands import export_settings

    for profile in list_profiles():
        if profile.arch == "x86_64" and profile.export.format == "onnx":
            assert export_settings(profile.name, {"isa": isa})["precision"] != "int8", profile.name
