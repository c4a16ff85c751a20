"""Helpers of the device tests (a module of its own: ``conftest`` is a name several test folders use)."""

from __future__ import annotations

import contextlib
import io


def run_cli(*args: str) -> tuple[int, str]:
    """``edge-anomaly ARGS`` in this process: (exit status, stdout + stderr)."""
    from edge_anomaly.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def intel_core_cpu_here() -> tuple[tuple[str, ...], str]:
    """(flags, expected precision) for ``export --device intel-core-cpu`` on this CPU.

    The profile targets VNNI (INT8), and an INT8 bundle for VNNI is refused by its own parity check on
    a CPU without an 8-bit dot product (it saturates there: image AUROC -0.16 on the boards, AVX2 AMD
    EPYC); elsewhere the flags name this CPU's level, for which the profile's ``precision_by_isa`` gives FP32.
    """
    from runtime.cpu import DOT_PRODUCT_ISAS, local_cpu

    isa = local_cpu().isa
    return ((), "int8") if isa in DOT_PRODUCT_ISAS else (("--target-isa", isa), "fp32")
