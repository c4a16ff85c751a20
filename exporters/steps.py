"""What ``edge-anomaly export`` shows while it works: one line per step, the libraries kept quiet.

Tracing, quantising and compiling go through torch.onnx, onnxscript, onnxruntime, NNCF and
OpenVINO, which between them print some 80 lines of their own (constant folding, initializer
deduplication, bias warnings, INFO lines, progress bars) and nothing that says how far the
export is. A :class:`Steps` prints ``name ... 12.3 s`` per step on stderr and, unless verbose,
sends everything the libraries write during the step (Python and C++ alike: the process's
stdout and stderr, logging, warnings) to a scratch file, replayed on stderr if the step fails,
so no error is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator


class Steps:
    """``show``: print each step's name and time; ``quiet``: silence other libraries during steps."""

    def __init__(self, show: bool = False, quiet: bool = False) -> None:
        self.show = show
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.show:
            print(f"{name} ...", end="" if self.quiet else "\n", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with _silenced() if self.quiet else contextlib.nullcontext():
            yield
        if self.show:
            print(f"{'' if self.quiet else name + ':'} {time.perf_counter() - started:.1f} s", file=sys.stderr,
                  flush=True)


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Everything written to stdout/stderr (file descriptors 1 and 2), logged or warned goes to a scratch file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        for fd in saved:
            os.dup2(scratch.fileno(), fd)
        try:
            with contextlib.redirect_stdout(scratch), contextlib.redirect_stderr(scratch):
                yield
        except BaseException:
            _restore(saved)
            scratch.seek(0)
            sys.stderr.write("\n" + scratch.read())
            raise
        finally:
            logging.disable(logging.NOTSET)
            _restore(saved)


def _restore(saved: dict[int, int]) -> None:
    """Put stdout and stderr back (idempotent: the saved descriptors are closed once)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]
