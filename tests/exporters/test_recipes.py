"""The INT8 recipe follows the target CPU's instruction set; the exporting CPU is read from /proc/cpuinfo."""

from __future__ import annotations

import pytest

from exporters.recipes import int8_recipe, speed_note, target_isa
from runtime.cpu import CpuInfo, isa_of, local_cpu

SKYLAKE = ("avx2", "avx512f", "avx512bw")  # AVX-512 without VNNI: vpmaddubsw saturates as on AVX2


@pytest.mark.parametrize("flags, isa", [
    (("avx2",), "avx2"),
    (SKYLAKE, "avx512"),
    (("avx2", "avx_vnni"), "avx_vnni"),  # Alder Lake and later
    (SKYLAKE + ("avx512_vnni", "avx512_bf16"), "avx512_vnni"),
    (SKYLAKE + ("avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"), "amx"),
    (("asimd",), "arm64"),
    (("asimd", "asimddp"), "arm_dotprod"),
])
def test_isa_level_from_cpu_flags(flags, isa):
    assert isa_of(flags) == isa


@pytest.mark.parametrize("isa, saturates", [("avx2", True), ("avx512", True), ("avx_vnni", False),
                                            ("avx512_vnni", False), ("amx", False), ("arm64", False),
                                            ("arm_dotprod", False)])
def test_cpus_that_saturate_get_the_accurate_recipe(isa, saturates):
    """An AVX2 target gets the recipe that cannot saturate, a VNNI one the fast 8-bit one."""
    assert int8_recipe(isa).model_dump() == {"target_isa": isa, "onnxruntime": "U8U8" if saturates else "U8S8",
                                             "openvino_weight_bits": 7 if saturates else 8}
    assert int8_recipe(isa).saturates == saturates
    note = speed_note(int8_recipe(isa))  # the export's summary line: INT8 there is no faster than FP32
    assert (note is not None) == saturates
    assert note is None or (f"INT8 for {isa} " in note and "--precision fp32 is the faster bundle" in note)


def test_target_isa_is_the_flag_then_the_profile_then_this_cpu():
    assert target_isa("avx2", "avx512_vnni") == "avx2"
    assert target_isa(None, "avx512_vnni") == "avx512_vnni"
    assert target_isa() == local_cpu().isa
    with pytest.raises(ValueError, match="'sse4' is not one of"):
        target_isa("sse4")


def test_local_cpu_reads_model_and_relevant_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-8700\n"
                       "flags\t\t: fpu sse sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\n")
    cpu = local_cpu(cpuinfo)
    assert cpu == CpuInfo(model="Intel(R) Core(TM) i7-8700", flags=("avx2",))
    assert cpu.isa == "avx2" and not cpu.has_bf16
    assert CpuInfo.model_validate(cpu.model_dump(mode="json")) == cpu


def test_local_cpu_names_a_raspberry_pi_by_its_model_not_a_core_part_number(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    core = "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n\n"
    cpuinfo.write_text(f"processor\t: 0\n{core}processor\t: 1\n{core}Revision\t: c03114\n"
                       "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    cpu = local_cpu(cpuinfo)
    assert cpu == CpuInfo(model="Raspberry Pi 4 Model B Rev 1.4", flags=("asimd",)) and cpu.isa == "arm64"
