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
