"""The INT8 recipe for the CPU a bundle will run on, chosen by instruction set.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with vpmaddubsw, whose
16-bit pair sums saturate (255 x 127 x 2 > 32767): ONNX Runtime's usual U8S8 INT8 PatchCore
lost its image AUROC (1.0 -> 0.47 on bottle) on such a CPU. For those targets ONNX Runtime
gets uint8 weights (U8U8: accurate, but slower than FP32) and NNCF its overflow fix (7-bit
weights). ONNX Runtime's own 7-bit option (``reduce_range``) was tried instead of U8U8 and lost
0.24 image AUROC on bottle, so it is not used. CPUs with a true 8-bit dot product (VNNI, AMX,
Arm's SDOT/UDOT; Arm has no saturating pair instruction at all) get U8S8, ONNX Runtime's fast
kernels, and full 8-bit weights in OpenVINO, which are also the more accurate ones.

The target is, in order: ``--target-isa``, the device profile's ``isa``, the exporting CPU's.
"""

from __future__ import annotations

from runtime.cpu import DOT_PRODUCT_ISAS, ISAS, local_cpu
from runtime.manifest import Int8Recipe


def int8_recipe(isa: str) -> Int8Recipe:
    """The manifest's ``engine.int8_recipe`` for instruction-set level ``isa`` (one of runtime.cpu.ISAS)."""
    if isa not in ISAS:
        raise ValueError(f"target ISA {isa!r} is not one of {', '.join(ISAS)}")
    saturates = isa not in DOT_PRODUCT_ISAS and isa != "arm64"
    return Int8Recipe(target_isa=isa, onnxruntime="U8U8" if saturates else "U8S8",
                      openvino_weight_bits=7 if saturates else 8)


def speed_note(recipe: Int8Recipe) -> str | None:
    """What the export tells a user about an INT8 bundle's speed on its target, or None: the recipe
    that cannot saturate is accurate but no faster than FP32 (docs/measurements.md, INT8 without VNNI)."""
    if not recipe.saturates:
        return None
    return (f"INT8 for {recipe.target_isa} (no 8-bit dot product) runs slower than FP32 on such CPUs "
            "(docs/measurements.md, INT8 without VNNI): --precision fp32 is the faster bundle; INT8 only saves size")


def target_isa(requested: str | None = None, profile_isa: str | None = None) -> str:
    """``requested`` (--target-isa), else the profile's, else this machine's instruction-set level."""
    isa = requested or profile_isa or local_cpu().isa
    if isa not in ISAS:
        raise ValueError(f"target ISA {isa!r} is not one of {', '.join(ISAS)}")
    return isa
