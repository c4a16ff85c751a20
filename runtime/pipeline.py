"""Pipelined inference: decoding, preprocessing and inference of consecutive frames overlap.

    decode thread -> bounded queue -> preprocess thread -> engine -> caller (postprocess, in order)

The engine is a pool of OpenVINO asynchronous infer requests when the backend is OpenVINO
(several frames in flight on the device), else one worker thread calling ``Detector.infer``.
At most ``depth`` frames are between decoding and the caller at any time, so memory stays
bounded on a 4K stream; results come back in input order, identical to ``Detector.predict``
one frame at a time. Any error in a stage stops the run and is raised to the caller.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import GeneratorType

import numpy as np

from runtime.detector import Detector, Prepared
from runtime.result import Result
from runtime.sources import Frame

_POLL_S = 0.1  # how often blocked stages look at the stop flag
_JOIN_S = 10.0  # a source stuck in a blocking read is left to its (daemon) thread
_END = object()
Outputs = tuple[np.ndarray, np.ndarray]


class _WorkerEngine:
    """Inference on a thread of its own, for backends without an asynchronous API."""

    def __init__(self, detector: Detector, on_done: Callable[[int, Outputs | BaseException], None]) -> None:
        self.detector = detector
        self.on_done = on_done
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="edge-anomaly-infer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not _END:
            inputs, tag = job
            try:
                self.on_done(tag, self.detector.infer(inputs))
            except BaseException as exc:  # handed to the caller by on_done
                self.on_done(tag, exc)

    def submit(self, inputs: np.ndarray, tag: int) -> None:
        self.jobs.put((inputs, tag))

    def wait_all(self) -> None:
        self.jobs.put(_END)
        self.thread.join()


class Pipeline:
    """Runs frames through a detector with the stages overlapped; see the module docstring.

    ``drop_when_full`` is for live sources: when inference falls behind, new frames are dropped
    (and counted in ``dropped``) instead of queued, so results stay current.
    """

    def __init__(self, detector: Detector, depth: int = 4, color_order: str = "RGB",
                 drop_when_full: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.detector = detector
        self.depth = depth
        self.color_order = color_order
        self.drop_when_full = drop_when_full
        self.dropped = 0

    def _engine(self, on_done: Callable[[int, Outputs | BaseException], None]):
        backend = self.detector.backend
        if hasattr(backend, "infer_queue") and not (backend.static_batch and backend.max_batch > 1):
            return backend.infer_queue(on_done, jobs=min(self.depth, max(2, backend.optimal_requests)))
        return _WorkerEngine(self.detector, on_done)

    def run(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, Result]]:
        """(frame, result) pairs in the order the frames came."""
        run = _Run(self, frames)
        try:
            yield from run.results()
        finally:
            run.stop()


class _Run:
    """The threads and shared state of one :meth:`Pipeline.run`."""

    def __init__(self, pipeline: Pipeline, frames: Iterable[Frame]) -> None:
        self.pipeline = pipeline
        self.detector = pipeline.detector
        self.frames = frames
        self.stopping = threading.Event()
        self.changed = threading.Condition()
        self.decoded: queue.Queue = queue.Queue(maxsize=pipeline.depth)
        self.slots = threading.Semaphore(pipeline.depth)  # frames between decode and the caller
        self.pending: dict[int, tuple[Frame, Prepared, float]] = {}
        self.done: dict[int, Outputs] = {}
        self.total: int | None = None  # frames submitted, known once the input is exhausted
        self.error: BaseException | None = None
        self.error_at = sys.maxsize  # frames before the one that failed are still delivered
        self.engine = pipeline._engine(self._finished)
        self.threads = [threading.Thread(target=self._decode, name="edge-anomaly-decode", daemon=True),
                        threading.Thread(target=self._submit, name="edge-anomaly-prepare", daemon=True)]
        for thread in self.threads:
            thread.start()

    def _fail(self, exc: BaseException, at: int = sys.maxsize) -> None:
        """Stop the run; ``at`` is the sequence number of the failing frame (a decoding error has
        none: it is raised after every frame submitted before it)."""
        with self.changed:
            if self.error is None or at < self.error_at:
                self.error, self.error_at = exc, at
            self.changed.notify_all()
        self.stopping.set()

    def _put(self, item: object) -> bool:
        while not self.stopping.is_set():
            try:
                self.decoded.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        try:
            for frame in self.frames:
                if self.stopping.is_set():
                    return
                if self.pipeline.drop_when_full:
                    try:
                        self.decoded.put_nowait(frame)
                    except queue.Full:
                        self.pipeline.dropped += 1
                elif not self._put(frame):
                    return
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._put(_END)

    def _next_decoded(self) -> object:
        while not self.stopping.is_set():
            try:
                return self.decoded.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    def _submit(self) -> None:
        sequence = 0
        try:
            while (frame := self._next_decoded()) is not _END:
                while not self.slots.acquire(timeout=_POLL_S):
                    if self.stopping.is_set():
                        return
                started = time.perf_counter()
                prepared = self.detector.prepare(frame.image, self.pipeline.color_order)
                with self.changed:
                    self.pending[sequence] = (frame, prepared, started)
                self.engine.submit(prepared.input[None], sequence)
                sequence += 1
        except BaseException as exc:
            self._fail(exc, at=sequence)
        finally:
            with self.changed:
                self.total = sequence
                self.changed.notify_all()

    def _finished(self, sequence: int, outputs: Outputs | BaseException) -> None:
        if isinstance(outputs, BaseException):
            self._fail(outputs, at=sequence)
            return
        with self.changed:
            self.done[sequence] = outputs
            self.changed.notify_all()

    def results(self) -> Iterator[tuple[Frame, Result]]:
        sequence = 0
        while True:
            with self.changed:
                while True:
                    last = self.error_at if self.total is None else min(self.error_at, self.total)
                    if sequence in self.done and sequence < last:
                        break
                    if sequence >= last and (self.error is not None or self.total is not None):
                        if self.error is not None:
                            raise self.error
                        return  # every submitted frame has been returned
                    self.changed.wait()
                (heatmaps, scores), (frame, prepared, started) = self.done.pop(sequence), self.pending.pop(sequence)
            result = self.detector.decide(prepared, heatmaps[0], scores[0], 0.0)
            result.latency_ms = (time.perf_counter() - started) * 1000
            self.slots.release()
            yield frame, result
            sequence += 1

    def stop(self) -> None:
        self.stopping.set()
        if not isinstance(self.frames, GeneratorType):  # a generator cannot be closed from another thread
            close = getattr(self.frames, "close", None)
            if close is not None:
                close()
        for thread in self.threads:
            thread.join(timeout=_JOIN_S)
        self.engine.wait_all()
