"""export's own progress: one line per step, other libraries' output hidden, and replayed when a step fails."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import pytest

from exporters.steps import Steps


def _noisy() -> None:
    print("library print")
    os.write(1, b"C++ stdout\n")
    os.write(2, b"C++ stderr\n")
    logging.getLogger("nncf").warning("library warning")
    warnings.warn("library UserWarning", stacklevel=1)


def test_quiet_steps_show_only_their_own_lines(capfd):
    steps = Steps(show=True, quiet=True)
    with steps.step("tracing the model to ONNX"):
        _noisy()
    print("after", file=sys.stderr)
    out, err = capfd.readouterr()
    assert out == ""
    assert err.startswith("tracing the model to ONNX ... ") and err.endswith(" s\nafter\n")
    assert "library" not in err and "C++" not in err


def test_a_failing_step_replays_what_the_libraries_said(capfd):
    with pytest.raises(RuntimeError, match="build failed"), Steps(show=True, quiet=True).step("building"):
        _noisy()
        raise RuntimeError("build failed")
    _, err = capfd.readouterr()
    assert "C++ stderr" in err and "library print" in err and "C++ stdout" in err


def test_verbose_steps_let_everything_through(capfd):
    with Steps(show=True, quiet=False).step("tracing"):
        os.write(1, b"C++ stdout\n")
    out, err = capfd.readouterr()
    assert out == "C++ stdout\n" and err.startswith("tracing ...\ntracing: ")
