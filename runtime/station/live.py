"""What the page shows live: each camera's latest frame and a numbered stream of events for ``/events``.

Cheap while nobody watches: a camera thread only swaps a reference to its latest frame and result
and appends a small summary to a ring; the annotated JPEG is made when a page asks for it, at
most ``fps`` times a second per camera, and listeners (server-sent event streams on the web
server's event loop) are woken only if there are any.

Event ids are ``<boot>-<number>``: ``boot`` is new in every process, so an id from before a restart
(or any id this process never gave out) is unknown, and a page reconnecting with it starts from now.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.result import Result
from runtime.station.messages import Inspection, iso_time
from runtime.visualize import annotate

RING = 256  # events a reconnecting page can catch up on


@dataclass
class _Latest:
    frame: np.ndarray
    result: Result
    inspection_id: str
    jpeg: bytes | None = None
    encoded_at: float = 0.0


def summary(inspection: Inspection) -> dict:
    """The fields the page's list and verdict banner need (the full record is in the history)."""
    result = inspection.result
    return {"id": inspection.id, "camera": inspection.camera, "time": inspection.started,
            "timestamp": iso_time(inspection.started), "part_id": inspection.part_id, "source": inspection.source,
            "label": result.label,
            "kind": result.kind, "score": float(result.score), "normalized_score": round(result.normalized_score, 4),
            "confidence": round(result.confidence, 4), "latency_ms": round(inspection.total_ms, 1),
            "overlay": inspection.heatmap_path is not None, "queued": time.time()}


class LiveFeed:
    def __init__(self, fps: float, jpeg_quality: int = 80) -> None:
        self.min_interval = 1.0 / fps
        self.jpeg_quality = jpeg_quality
        self.closing = False
        self._latest: dict[str, _Latest] = {}
        self._events: deque[tuple[int, str, dict]] = deque(maxlen=RING)
        self._numbers = itertools.count(1)
        self.boot = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # -- producers (camera threads, reviews) ---------------------------------------------------------

    def inspected(self, inspection: Inspection, frame: np.ndarray) -> None:
        with self._lock:
            self._latest[inspection.camera] = _Latest(frame, inspection.result, inspection.id)
        self.publish("inspection", summary(inspection))

    def publish(self, name: str, data: dict) -> None:
        with self._lock:
            self._events.append((next(self._numbers), name, data))
            listeners = list(self._listeners)
        for loop, event in listeners:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: its stream is gone
                pass

    # -- consumers (the web server) ---------------------------------------------------------------------

    def latest_frame(self, camera: str) -> tuple[str, np.ndarray] | None:
        """(inspection id, raw frame) of the camera's last inspection, for a review of a frame without evidence."""
        with self._lock:
            latest = self._latest.get(camera)
        return (latest.inspection_id, latest.frame) if latest else None

    def jpeg(self, camera: str) -> tuple[str, bytes] | None:
        """(inspection id, annotated JPEG) of the camera's latest frame, re-encoded at most ``fps`` times a second."""
        with self._lock:
            latest = self._latest.get(camera)
        if latest is None:
            return None
        now = time.monotonic()
        if latest.jpeg is None or now - latest.encoded_at >= self.min_interval:
            picture = cv2.cvtColor(annotate(latest.frame, latest.result), cv2.COLOR_RGB2BGR)
            ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            latest.jpeg, latest.encoded_at = encoded.tobytes() if ok else b"", now
        return latest.inspection_id, latest.jpeg

    def events_after(self, number: int) -> list[tuple[int, str, dict]]:
        with self._lock:
            return [event for event in self._events if event[0] > number]

    def event_id(self, number: int) -> str:
        return f"{self.boot}-{number}"

    def resume_after(self, last_event_id: str | None) -> int:
        """The event number a reconnecting page resumes after: its ``Last-Event-ID`` when this process gave it
        out, else the newest (an id from before a restart, garbled or from the future starts from now)."""
        newest = self.last_number
        boot, _, number = (last_event_id or "").partition("-")
        if boot == self.boot and number.isdigit() and int(number) <= newest:
            return int(number)
        return newest

    @property
    def last_number(self) -> int:
        with self._lock:
            return self._events[-1][0] if self._events else 0

    def listen(self) -> asyncio.Event:
        """An event set whenever something new arrives; call from the event loop, ``forget`` it when done."""
        event = asyncio.Event()
        with self._lock:
            self._listeners.add((asyncio.get_running_loop(), event))
        return event

    def forget(self, event: asyncio.Event) -> None:
        with self._lock:
            self._listeners = {item for item in self._listeners if item[1] is not event}

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    def close(self) -> None:
        """Wake every stream so it ends: the web server can then stop without waiting on them."""
        self.closing = True
        self.publish("closing", {})
