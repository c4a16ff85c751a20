"""The INT8 recipe for the CPU a bundle will run on, chosen by instruction set.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with vpmaddubsw, whose
16-bit pair sums saturate (255 x 127 x 2 > 32767): ONNX Runtime's INT8 PatchCore lost its
image AUROC (1.0 -> 0.47 on bottle) on such a CPU, and NNCF ships an "overflow fix" for it.
Weights of 7 bits (|w| <= 63) cannot saturate, so for those CPUs both engines quantise
weights to 7 bits: ONNX Runtime's ``reduce_range`` and NNCF's overflow fix. CPUs with a true
8-bit dot product (VNNI, AMX, Arm's SDOT/UDOT; Arm has no saturating pair instruction at all)
keep full 8-bit weights, which are the more accurate ones. Either way activations are uint8
and weights int8 (U8S8), ONNX Runtime's fast kernels; the uint8 weights (U8U8) used before
were accurate everywhere but ran 3x slower than FP32 on x86.

The target is, in order: ``--target-isa``, the device profile's ``isa``, the exporting CPU's.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cpu import DOT_PRODUCT_ISAS, ISAS, local_cpu


@dataclass(frozen=True)
class Int8Recipe:
    isa: str
    seven_bit_weights: bool  # ONNX Runtime's reduce_range, NNCF's overflow fix

    def to_dict(self) -> dict:
        """The manifest's ``engine.int8_recipe``."""
        return {"target_isa": self.isa, "weight_bits": 7 if self.seven_bit_weights else 8}


def int8_recipe(isa: str) -> Int8Recipe:
    """The recipe for instruction-set level ``isa`` (one of runtime.cpu.ISAS)."""
    if isa not in ISAS:
        raise ValueError(f"target ISA {isa!r} is not one of {', '.join(ISAS)}")
    saturates = isa not in DOT_PRODUCT_ISAS and isa != "arm64"
    return Int8Recipe(isa=isa, seven_bit_weights=saturates)


def target_isa(requested: str | None = None, profile_isa: str | None = None) -> str:
    """``requested`` (--target-isa), else the profile's, else this machine's instruction-set level."""
    isa = requested or profile_isa or local_cpu().isa
    if isa not in ISAS:
        raise ValueError(f"target ISA {isa!r} is not one of {', '.join(ISAS)}")
    return isa
