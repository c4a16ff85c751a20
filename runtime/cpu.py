"""The CPU a bundle runs or was exported on: its model name and the instruction sets that decide
how INT8 and BF16 compute.

x86 CPUs without VNNI multiply uint8 x int8 with an instruction that saturates (vpmaddubsw),
so an INT8 recipe that is exact on one CPU can be wrong on another; BF16 is fast only with
AVX-512 BF16 or AMX. The exporter records these flags in the manifest (``parity.cpu``) and the
self-test names both machines' flags when a bundle answers differently on the box.
"""

from __future__ import annotations

import platform
from pathlib import Path

from runtime.schema import Section

# Flags (as /proc/cpuinfo spells them) that change INT8/BF16 kernels in ONNX Runtime and OpenVINO.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                  "amx_int8", "amx_tile", "asimd", "asimddp", "i8mm", "bf16", "sve")
# Instruction-set levels a device profile or --target-isa names, from the most to the least capable.
ISAS = ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm_dotprod", "arm64")
# Levels with a non-saturating 8-bit dot product (VNNI, AMX, Arm's SDOT/UDOT).
DOT_PRODUCT_ISAS = ("amx", "avx512_vnni", "avx_vnni", "arm_dotprod")


class CpuInfo(Section):
    """A CPU as the manifest records it (``parity.cpu``: the exporting CPU) and the self-test reports it."""

    model: str
    flags: tuple[str, ...]  # the RELEVANT_FLAGS this CPU has

    @property
    def isa(self) -> str:
        return isa_of(self.flags)

    @property
    def has_bf16(self) -> bool:
        """Whether BF16 runs natively (AVX-512 BF16 or AMX; Arm's BF16 extension)."""
        return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(self.flags))

    def describe(self) -> str:
        return f"{self.model} ({self.isa}: {', '.join(self.flags) or 'no INT8/BF16 extensions'})"


def isa_of(flags: tuple[str, ...] | list[str]) -> str:
    """The instruction-set level (one of :data:`ISAS`) of a CPU with ``flags`` (every arm64 CPU lists asimd)."""
    present = set(flags)
    if {"asimd", "asimddp"} & present:
        return "arm_dotprod" if "asimddp" in present else "arm64"
    if "amx_int8" in present:
        return "amx"
    if "avx512_vnni" in present:
        return "avx512_vnni"
    if "avx_vnni" in present:
        return "avx_vnni"
    if "avx512bw" in present:
        return "avx512"
    return "avx2"


def _cpuinfo_field(text: str, *keys: str) -> str | None:
    """The first non-empty value of the first of ``keys`` (in their order of preference) that ``text`` has."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys and value.strip():
            found.setdefault(key.strip(), value.strip())
    return next((found[key] for key in keys if key in found), None)


def local_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU, from /proc/cpuinfo (Linux); elsewhere the model alone, with no flags."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return CpuInfo(model=platform.processor() or platform.machine() or "unknown", flags=())
    # x86, then the board's name (a Raspberry Pi's "Model", which /proc/cpuinfo lists after every core's "CPU part")
    model = _cpuinfo_field(text, "model name", "Model", "Hardware", "CPU part") or platform.machine()
    flags = set((_cpuinfo_field(text, "flags", "Features") or "").split())
    return CpuInfo(model=model, flags=tuple(flag for flag in RELEVANT_FLAGS if flag in flags))
