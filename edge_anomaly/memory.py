"""Keeping freed memory in the process, so that PyTorch's large CPU tensors do not fault their pages in again.

glibc maps every allocation above its mmap threshold (at most 32 MiB by default) fresh from the
kernel and unmaps it when freed, and trims a freed heap top back to the kernel. A backbone's
activations over a batch of a few hundred pixels are that large, so each layer of each batch
paid a page fault per 4 KiB: on a 2-core AMD EPYC the demo spent 53 s of its 170 CPU-seconds in
the kernel (22.8 million faults, 96 s wall); with both thresholds raised, 3 s (58 s wall), and one
PatchCore fit at 320 x 384 took 13.7 s instead of 21.2. The price is that freed memory stays with
the process (the demo's peak resident memory 1.82 GB against 1.74), which suits a fit or an
evaluation that ends, not necessarily a station that runs for months, so only the training
side's command and tests call this.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and the value both thresholds take: larger than any one activation.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BELOW_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False (and nothing changed) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator's thresholds are left as they are")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))
