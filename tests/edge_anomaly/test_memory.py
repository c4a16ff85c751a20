"""The training side's allocator setting: a backbone's activations, freed after each batch, are reused by the
next one instead of being mapped and faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys, torch
from edge_anomaly.backbones import build_extractor
from edge_anomaly.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
extractor = build_extractor("efficientnet-lite0", ["stage3", "stage5"], (320, 384))
batch = torch.rand(8, 3, 320, 384)
with torch.no_grad():
    extractor(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        extractor(batch)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout
    kept, faults = out.split()
    return kept == "True", int(faults)


def test_a_backbones_activations_are_reused_instead_of_faulted_in_again():
    pytest.importorskip("torch")
    kept, with_setting = _faults("keep")
    if not kept:
        pytest.skip("the C library is not glibc: keep_freed_memory changes nothing here")
    _, without = _faults("default")
    assert without > 3 * 25_000  # each pass maps its activations afresh: a fault per 4 KiB page
    assert with_setting < without / 10
