"""Cameras that share one engine: frames that arrive together go through one engine call.

:class:`BatchingBackend` wraps an engine that several camera threads call. It has no thread
of its own (nothing is left running at shutdown): the first caller that finds the engine free
leads a round. It waits up to ``max_wait_ms`` after the oldest waiting frame for the frames of
the other cameras active at the moment (a camera is active when it called within the last
``active_s``; a lone camera never waits), takes up to the engine's ``max_batch`` images, runs
one engine call and hands every caller its own rows. The outputs are the engine's for those
very inputs, so each camera's scores are those it would get alone (to the engine's own
batch-size rounding). A failed engine call raises in every caller of that round; a frame of
another shape than the round's goes to a round of its own, so it fails alone. With an engine of
several streams (OpenVINO's throughput hint) as many rounds run at once, each gathering its
share of the active cameras.

The station's policy (``batching`` in station.yaml) is :func:`shared_performance` (the hint an
engine that several cameras share is opened with) and :func:`share_engine` (whether its calls
are batched).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from runtime.backends import Backend, run_batched

BATCHING_MODES = ("auto", "off")
log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    """One caller's images, waiting for a round; ``outputs`` or ``error`` is set when it is done."""

    inputs: np.ndarray
    arrived: float
    outputs: tuple[np.ndarray, np.ndarray] | None = None
    error: BaseException | None = None
    taken: bool = False  # by a round
    done: bool = False


class BatchingBackend:
    """A :class:`runtime.backends.Backend` that gathers concurrent callers' inputs into one call of ``inner``."""

    static_batch = False  # the inner engine's fixed batch is padded by run_batched inside the round

    def __init__(self, inner: Backend, max_wait_ms: float = 4.0, active_s: float = 1.0,
                 streams: int | None = None) -> None:
        """``streams``: rounds in flight at once (default: the engine's ``optimal_requests``, else 1)."""
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms {max_wait_ms} must be >= 0")
        self.inner = inner
        self.max_batch = inner.max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.active_s = active_s
        self.rounds = 0  # engine calls made, and the images they carried: batching's effect, for benches
        self.images = 0
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._seen: dict[int, float] = {}  # caller thread -> when it last called
        self.streams = max(1, int(streams or getattr(inner, "optimal_requests", 1)))
        self._leaders = 0  # rounds being gathered or run
        self._closed = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def device(self) -> str | None:
        return getattr(self.inner, "device", None)

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This caller's (heatmaps, scores), computed in a round with whatever other cameras sent meanwhile."""
        request = _Request(inputs, time.monotonic())
        with self._cond:
            if self._closed:
                request.done = True
            else:
                self._seen[threading.get_ident()] = request.arrived
                self._pending.append(request)
                self._cond.notify_all()
                while not request.done:
                    if request.taken or self._leaders >= self.streams:
                        self._cond.wait()
                    else:
                        self._lead()
        if request.outputs is None and request.error is None:  # closed: straight to the engine
            return run_batched(self.inner, inputs)
        if request.error is not None:
            raise request.error
        return request.outputs

    def close(self) -> None:
        """End every wait now; later calls go straight to the engine, unbatched."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _lead(self) -> None:
        """Run one round (called holding the lock, which is released while waiting and during the engine call)."""
        self._leaders += 1
        try:
            batch = self._take_batch(self._wait_for_others())
            if not batch:
                return
            self._cond.release()
            try:
                self._run(batch)
            finally:
                self._cond.acquire()
            if batch[0].error is None:
                self.rounds += 1
                self.images += sum(len(request.inputs) for request in batch)
            for request in batch:
                request.done = True
        finally:
            self._leaders -= 1
            self._cond.notify_all()

    def _active_callers(self, now: float) -> int:
        self._seen = {caller: seen for caller, seen in self._seen.items() if now - seen <= self.active_s}
        return len(self._seen)

    def _wait_for_others(self) -> int:
        """Until the active cameras' frames fill this round's share of the streams, the batch is full, or the
        oldest waiting frame waited max_wait; returns that share (how many callers this round takes at most)."""
        wanted = 1
        while not self._closed and self._pending:
            now = time.monotonic()
            deadline = self._pending[0].arrived + self.max_wait_s
            images = sum(len(request.inputs) for request in self._pending)
            wanted = -(-self._active_callers(now) // self.streams)  # the active cameras over the rounds in flight
            if len(self._pending) >= wanted or images >= self.max_batch or now >= deadline:
                break
            self._cond.wait(deadline - now)
        return wanted if self.streams > 1 else len(self._pending)

    def _take_batch(self, callers: int) -> list[_Request]:
        """The oldest request and those after it of the same image shape, up to ``callers`` requests and max_batch
        images (with several streams the rest is left to the next round, on another stream)."""
        if not self._pending:
            return []
        first = self._pending[0]
        batch, images = [first], len(first.inputs)
        for request in self._pending[1:]:
            if len(batch) >= callers:
                break
            if request.inputs.shape[1:] == first.inputs.shape[1:] and images + len(request.inputs) <= self.max_batch:
                batch.append(request)
                images += len(request.inputs)
        for request in batch:
            request.taken = True
        self._pending = [request for request in self._pending if not request.taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        """One engine call for the whole batch; its rows split back to each request, or its error to all."""
        try:
            inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([r.inputs for r in batch])
            heatmaps, scores = run_batched(self.inner, inputs)
        except BaseException as exc:  # every caller of the round gets it; the next round starts afresh
            for request in batch:
                request.error = exc
            return
        start = 0
        for request in batch:
            count = len(request.inputs)
            request.outputs = (heatmaps[start:start + count], scores[start:start + count])
            start += count


def shared_performance(mode: str, cameras: int) -> str:
    """The performance hint for an engine that ``cameras`` share: under auto from 2 cameras OpenVINO's throughput
    streams (a request per stream in flight), which paid on the 2-core CPU (bench/cameras.py); latency for a lone
    camera or with batching off. Engines without the hint ignore it."""
    _check_mode(mode)
    return "throughput" if mode == "auto" and cameras >= 2 else "latency"


def share_engine(detector, cameras: int, mode: str, max_wait_ms: float) -> bool:
    """Put ``detector``'s engine behind a :class:`BatchingBackend` when ``cameras`` (2 or more) share it under
    auto; one round per stream, so on the CPU frames batch only where the cameras outnumber the streams.
    Returns whether it now batches."""
    _check_mode(mode)
    engine = detector.backend
    if cameras < 2 or mode == "off":
        return False
    if not isinstance(engine, BatchingBackend):
        detector.backend = BatchingBackend(engine, max_wait_ms)
        log.info("%d cameras share the %s engine of bundle %s: frames that arrive within %g ms go through one "
                 "call (%d at once)", cameras, engine.name, detector.name, max_wait_ms, detector.backend.streams)
    return True


def _check_mode(mode: str) -> None:
    if mode not in BATCHING_MODES:
        raise ValueError(f"batching {mode!r} is not one of {', '.join(BATCHING_MODES)}")
