"""The station's web port: its page, the JSON API behind it, live events, evidence files, /metrics and /healthz.

A Starlette app served by uvicorn on one thread of its own (one event loop; the blocking handlers,
database reads and JPEG work, run in its small thread pool). Reading is open to whoever reaches the
port (it binds 127.0.0.1 unless told otherwise); a review needs a token or a user from the station's
secrets (:mod:`runtime.station.access`). Evidence is served only from inside the evidence folder.

No client can take the port away from the others: a request head must arrive within
``HEAD_TIMEOUT_S`` and a body within ``BODY_TIMEOUT_S``, an idle keep-alive connection is closed
after uvicorn's ``timeout_keep_alive``, one address holds at most ``MAX_PER_CLIENT`` connections (a
new one closes that address's oldest idle one), and ``/healthz`` is answered on the event loop by
its own thread, never behind the page's thread pool. Only the configured host names, ``localhost``
and IP literals are served (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.protocols.http.h11_impl import H11Protocol

from runtime import package_version
from runtime.station.access import Access, cross_site, known_host
from runtime.station.evidence import frame_path
from runtime.station.history import HISTORY, History
from runtime.station.live import LiveFeed
from runtime.station.review import ReviewError, Reviews

if TYPE_CHECKING:
    from runtime.station.publisher import Publisher
    from runtime.station.view import StationView

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page")
KEEPALIVE_S = 15.0
THUMB_PX = 160
MAX_LIST = 500
MAX_REVIEWED_TAR = 5000  # the newest reviewed frames one download carries
VERDICT_FOLDERS = ("normal", "defect")
CHART_BUCKETS = 360
WEB_NICE = 5  # the web server's threads run this much "nicer" than the camera threads
HEAD_TIMEOUT_S = 10.0  # a request's head (line and headers) must arrive within this
KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
BODY_TIMEOUT_S = 10.0  # a request body (a review's JSON) must arrive within this
MAX_PER_CLIENT = 32  # connections one client address may hold
MAX_CONNECTIONS = 512  # all clients together (uvicorn answers 503 beyond)
MAX_ROW = 2**63 - 1  # SQLite's largest integer
VERDICT_LABELS = {"normal": "normal", "anomalous": "anomalous"}
# The page runs only its own script and is never framed (no other site can lay it under a click).
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; "
                                           "base-uri 'none'; form-action 'self'",
                "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class _Thumbnails:
    """Small JPEGs of overlays for the results list, made on demand (reduced decode) and remembered."""

    def __init__(self, size: int = 256) -> None:
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes | None:
        key = str(path)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        picture = cv2.imread(key, cv2.IMREAD_REDUCED_COLOR_2)
        if picture is None:
            return None
        scale = THUMB_PX / max(picture.shape[:2])
        if scale < 1:
            picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if not ok:
            return None
        with self._lock:
            self._cache[key] = encoded.tobytes()
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return self._cache.get(key)


def _tar_of(frames: list[Path], top: str, beside: Path) -> Path:
    """An uncompressed tar (JPEGs do not compress) of ``frames`` under ``top/``, written next to the reviewed
    folder rather than in memory; the caller deletes it once sent."""
    handle, name = tempfile.mkstemp(prefix=".download-", suffix=".tar", dir=beside)
    with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as archive:
        for frame in frames:
            archive.add(frame, arcname=f"{top}/{frame.name}", recursive=False)
    return Path(name)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _whole(params, name: str, default: int | None = None) -> int | None:
    """A whole-number query value from 0 to ``MAX_ROW`` (a row or a count), else ValueError naming it."""
    number = _number(params, name, default)
    if number is None:
        return None
    if number != int(number) or not 0 <= number <= MAX_ROW:
        raise ValueError(f"{name} must be a whole number from 0 to {MAX_ROW}, got {params.get(name)[:40]!r}")
    return int(number)


def _number(params, name: str, default: float | None = None) -> float | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value[:40]!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value[:40]!r}")
    return number


class StationPage:
    """The page of one station: builds the history, the live feed, reviews and the app; ``observe`` is what
    each camera's inspector calls after every inspection."""

    def __init__(self, station: StationView, publisher: Publisher) -> None:
        config = station.config
        self.station = station
        self.config = config.http
        self.history = History(config.state_dir / HISTORY, config.http.history.max_inspections,
                               config.http.history.max_days)
        self.live = LiveFeed(config.http.live_fps)
        self.access = Access.from_config(config.http)
        self.reviews = Reviews(publisher, config.state_dir / "reviewed", self.history, self.live)
        self.evidence_dir = config.evidence.dir.resolve() if station.evidence is not None else None
        self._thumbnails = _Thumbnails()
        self._health_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="health")
        self.server = WebServer(self.app(), config.http)

    def observe(self, inspection, frame: np.ndarray) -> None:
        try:
            self.history.record(inspection, str(frame_path(inspection.heatmap_path)) if inspection.heatmap_path
                                else None)
            self.live.inspected(inspection, frame)
        except Exception:  # the page is a view: it never fails an inspection
            log.exception("page: cannot record inspection %s", inspection.id)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.live.close()
        self.server.stop()
        self._health_thread.shutdown(wait=True)
        self.history.close()

    # -- the app -------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/events", self.events),
            Route("/api/status", self.api_status),
            Route("/api/inspections", self.api_inspections),
            Route("/api/inspections/{id}", self.api_inspection),
            Route("/api/inspections/{id}/thumb.jpg", self.api_thumbnail),
            Route("/api/inspections/{id}/review", self.api_review, methods=["POST"]),
            Route("/api/reviewed/{camera}/{verdict}.tar", self.api_reviewed_frames),
            Route("/api/scores", self.api_scores),
            Route("/api/cameras/{camera}/live.jpg", self.api_live_frame),
            Route("/evidence/{path:path}", self.evidence),
            Mount("/static", StaticFiles(directory=PAGE)),
        ]
        return Starlette(routes=routes, middleware=[Middleware(RequestGuard, hosts=self.config.hosts)])

    def index(self, request: Request) -> Response:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    async def healthz(self, request: Request) -> JSONResponse:
        """On a thread of its own: whatever holds the page's thread pool, health answers."""
        healthy, details = await asyncio.get_running_loop().run_in_executor(self._health_thread, self.station.health)
        return JSONResponse({"status": "ok" if healthy else "degraded", **details}, status_code=200 if healthy else 503)

    def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.station.registry), media_type=CONTENT_TYPE_LATEST)

    def api_status(self, request: Request) -> JSONResponse:
        station = self.station
        healthy, health = station.health()
        beat, status = station.heartbeat(), station.status()
        cameras, views = {}, station.camera_views()
        for name, described in status["cameras"].items():
            view = views.get(name)
            cameras[name] = {**beat["cameras"].get(name, {}), **described,
                             "threshold": view.bundle.threshold if view else None,
                             "reviewed": {verdict: len(self._reviewed_frames(name, verdict))
                                          for verdict in VERDICT_FOLDERS},
                             "signature": {"signed": bool(view and view.signed),
                                           "key_id": view.signer if view else None,
                                           "verified": bool(view and view.signed) and station.trust is not None}}
        evidence = station.evidence
        disk = shutil.disk_usage(self.evidence_dir) if self.evidence_dir else None
        return JSONResponse({
            "station": station.config.station, "version": package_version(), "healthy": healthy,
            "problems": health["problems"], "uptime_s": beat["uptime_s"], "timestamp": beat["timestamp"],
            "mqtt": beat["mqtt"], "outbox": beat["outbox"] | {"write_failures": health["outbox_write_failures"]},
            "evidence": {"bytes": evidence.total_bytes if evidence else 0,
                         "max_bytes": evidence.max_bytes if evidence else 0,
                         "disk_free_bytes": disk.free if disk else None, "save": station.config.evidence.save},
            "history": {"inspections": self.history.count(), "write_failures": self.history.write_failures,
                        "lost": self.history.lost},
            "review": {"enabled": self.access.enabled, "methods": self.access.methods},
            "trust": {"required": station.trust is not None,
                      "keys": sorted(station.trust.keys) if station.trust is not None else []},
            "cameras": cameras,
        })

    def api_inspections(self, request: Request) -> JSONResponse:
        params = request.query_params
        verdict = params.get("verdict") or None
        if verdict is not None and verdict not in VERDICT_LABELS:
            return _error(400, f"verdict must be one of {', '.join(VERDICT_LABELS)}")
        reviewed = {"yes": True, "no": False}.get(params.get("reviewed", ""))
        try:
            since, until = _number(params, "since"), _number(params, "until")
            limit = _whole(params, "limit", 50)
            before = _whole(params, "before")
        except ValueError as exc:
            return _error(400, str(exc))
        rows = self.history.search(camera=params.get("camera") or None, label=verdict,
                                   kind=params.get("kind") or None, since=since, until=until, reviewed=reviewed,
                                   limit=max(1, min(limit, MAX_LIST)),
                                   before_row=before)
        return JSONResponse({"inspections": [self._with_links(row) for row in rows]})

    def api_inspection(self, request: Request) -> JSONResponse:
        row = self.history.get(request.path_params["id"])
        if row is None:
            return _error(404, "no such inspection (unknown or pruned from the history)")
        return JSONResponse(self._with_links(row))

    def _with_links(self, row: dict) -> dict:
        """The row with URLs for its evidence instead of paths on the station's disk (when still there)."""
        links = {}
        for name in ("overlay", "frame"):
            relative = self._inside_evidence(row.get(name))
            links[name] = f"/evidence/{relative.as_posix()}" if relative else None
        links["thumbnail"] = f"/api/inspections/{row['id']}/thumb.jpg" if links["overlay"] else None
        return {key: value for key, value in row.items() if key not in ("overlay", "frame")} | {"links": links}

    def _inside_evidence(self, path: str | None) -> Path | None:
        if not path or self.evidence_dir is None:
            return None
        resolved = Path(path).resolve()
        if self.evidence_dir not in resolved.parents or not resolved.is_file():
            return None
        return resolved.relative_to(self.evidence_dir)

    def api_thumbnail(self, request: Request) -> Response:
        row = self.history.get(request.path_params["id"])
        relative = self._inside_evidence(row["overlay"]) if row else None
        picture = self._thumbnails.get(self.evidence_dir / relative) if relative else None
        if picture is None:
            return _error(404, "no overlay kept for this inspection")
        return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def api_scores(self, request: Request) -> JSONResponse:
        camera = request.query_params.get("camera", "")
        try:
            hours = _number(request.query_params, "hours", 4.0)
        except ValueError as exc:
            return _error(400, str(exc))
        hours = min(max(hours, 0.01), self.config.history.max_days * 24)
        return JSONResponse({"camera": camera, "since": time.time() - hours * 3600, "threshold": 0.5,
                             "points": self.history.scores(camera, time.time() - hours * 3600, CHART_BUCKETS)})

    def api_live_frame(self, request: Request) -> Response:
        latest = self.live.jpeg(request.path_params["camera"])
        if latest is None:
            return _error(404, "no frame inspected on this camera yet")
        return Response(latest[1], media_type="image/jpeg",
                        headers={"Cache-Control": "no-store", "X-Inspection": latest[0]})

    def evidence(self, request: Request) -> Response:
        """A file from the evidence folder; anything resolving outside it (``..``, links) is not found."""
        if self.evidence_dir is None:
            return _error(404, "this station keeps no evidence")
        resolved = (self.evidence_dir / request.path_params["path"]).resolve()
        if (self.evidence_dir not in resolved.parents or resolved.suffix not in (".jpg", ".png")
                or not resolved.is_file()):
            return _error(404, "no such evidence file")
        return FileResponse(resolved, headers={"Cache-Control": "max-age=86400"})

    async def events(self, request: Request) -> Response:
        """Server-sent events: ``inspection`` (each result), ``review``; a reconnecting page resumes from
        ``Last-Event-ID`` within the ring (an id this process did not give out starts from now)."""
        live = self.live
        last = live.resume_after(request.headers.get("last-event-id"))

        async def stream():
            nonlocal last
            wake = live.listen()
            try:
                yield "retry: 2000\n\n"
                while not live.closing:
                    wake.clear()
                    for number, name, data in live.events_after(last):
                        last = number
                        text = json.dumps(data, separators=(",", ":"))
                        yield f"id: {live.event_id(number)}\nevent: {name}\ndata: {text}\n\n"
                    try:
                        await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                live.forget(wake)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _signed_in(self, request: Request) -> tuple[str | None, Response | None]:
        """(who, None) for a same-site request with the station's token or a user; else (None, the refusal)."""
        if not self.access.enabled:
            return None, _error(403, "reviews are off: the station config names no http.token or http.users")
        refused = cross_site(request.headers, request.headers.get("host"))
        if refused:
            return None, _error(403, f"cross-site request refused: {refused}")
        client = request.client.host if request.client else "?"
        if self.access.locked_out(client, request.headers.get("authorization")):
            return None, _error(429, "this credential failed too often from this address: wait a minute")
        who = self.access.identify(request.headers.get("authorization"), client)
        if who is None:
            return None, _error(401, "this needs the station's token (Bearer) or a user and password (Basic)",
                                **{"WWW-Authenticate": 'Bearer realm="edge-anomaly station"'})
        return who, None

    async def api_reviewed_frames(self, request: Request) -> Response:
        """The frames reviewed as ``verdict`` on one camera as a tar: what ``edge-anomaly update MODEL --add``
        takes on the workstation (the station has no torch to retrain). Signed-in only: it is a bulk export."""
        who, refusal = self._signed_in(request)
        if refusal:
            return refusal
        camera, verdict = request.path_params["camera"], request.path_params["verdict"]
        if camera not in self.station.camera_views() or verdict not in VERDICT_FOLDERS:
            return _error(404, f"no camera {camera[:64]!r} or verdict {verdict[:16]!r} (normal or defect)")
        frames = await asyncio.to_thread(self._reviewed_frames, camera, verdict)
        if not frames:
            return _error(404, f"no frames reviewed as {verdict} on camera {camera} yet")
        archive = await asyncio.to_thread(_tar_of, frames, f"{camera}-{verdict}", self.reviews.folder)
        log.info("%d reviewed %s frames of camera %s downloaded by %s", len(frames), verdict, camera, who,
                 extra={"camera": camera})
        return FileResponse(archive, media_type="application/x-tar", filename=f"{camera}-reviewed-{verdict}.tar",
                            background=BackgroundTask(archive.unlink, missing_ok=True))

    def _reviewed_frames(self, camera: str, verdict: str) -> list[Path]:
        """The newest ``MAX_REVIEWED_TAR`` frames whose latest committed review is ``verdict``, oldest first, as
        filed (whole, inside the camera's verdict folder): what the page counts and the download carries. A file
        in the folder without its review (a station killed between the two) is neither."""
        folder = (self.reviews.folder / camera / verdict).resolve()
        frames = []
        for path in self.history.reviewed_frames(camera, verdict, MAX_REVIEWED_TAR):
            try:
                whole = path.resolve().parent == folder and path.is_file() and path.stat().st_size > 0
            except OSError:
                whole = False
            if whole:
                frames.append(path)
        return frames[::-1]

    async def api_review(self, request: Request) -> JSONResponse:
        who, refusal = self._signed_in(request)
        if refusal:
            return refusal
        body, problem = await self._json_body(request)
        if problem:
            return problem
        verdict, note, name = body.get("verdict"), body.get("note"), body.get("reviewer")
        for field, value in (("verdict", verdict), ("note", note), ("reviewer", name)):
            if value is not None and (not isinstance(value, str) or len(value) > 500):
                return _error(400, f"'{field}' must be text of at most 500 characters")
        if not isinstance(verdict, str):
            return _error(400, "'verdict' is required: 'normal' or 'defect'")
        reviewer = f"{name.strip()[:64]} ({who})" if name and name.strip() else who
        try:
            review = await asyncio.to_thread(self.reviews.review, request.path_params["id"], verdict, reviewer, note)
        except ReviewError as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(review)

    async def _json_body(self, request: Request) -> tuple[dict, Response | None]:
        """The request's JSON object, read up to ``max_body_bytes`` (a longer body is refused unread)."""
        limit = self.config.max_body_bytes
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return {}, _error(415, "send the body as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return {}, _error(413, f"request body over {limit} bytes")
        async def read() -> bytes | None:
            data = b""
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    return None
            return data

        try:
            data = await asyncio.wait_for(read(), BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return {}, _error(408, f"request body not received within {BODY_TIMEOUT_S:.0f} s", Connection="close")
        if data is None:
            return {}, _error(413, f"request body over {limit} bytes")
        try:
            body = json.loads(data or b"{}")
        except (ValueError, RecursionError):
            return {}, _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return {}, _error(400, "body must be a JSON object")
        return body, None


class RequestGuard:
    """ASGI middleware: a request naming a host this station does not answer to (a DNS-rebinding page) gets 421,
    one whose path holds a NUL byte 400, before any route sees it."""

    def __init__(self, app: Callable, hosts: list[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            refusal = None
            if not known_host(host, self.hosts):
                refusal = _error(421, f"host {host[:100]!r} is not this station: it answers to localhost, IP "
                                      f"addresses and the names in http.hosts")
            elif "\0" in scope["path"]:
                refusal = _error(400, f"path {scope['path'][:100]!r} contains a NUL byte")
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the two limits it lacks: a request head must arrive within ``HEAD_TIMEOUT_S``
    of the connection (or of the previous response), and one client address holds at most ``MAX_PER_CLIENT``
    connections: a new one closes that address's oldest idle connection, or is closed when none is idle."""

    _head_timer: asyncio.TimerHandle | None = None
    _opened = 0.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._opened = time.monotonic()
        address = self.client[0] if self.client else None
        same = [c for c in self.connections if c is not self and c.client and c.client[0] == address]
        if len(same) >= MAX_PER_CLIENT:
            idle = [c for c in same if c.idle]
            if not idle:
                transport.close()
                return
            min(idle, key=lambda c: c._opened).transport.close()
        self._await_head()

    @property
    def idle(self) -> bool:
        """No request in progress: waiting for a head (or for the rest of one)."""
        return self.cycle is None or self.cycle.response_complete

    def _await_head(self) -> None:
        self._cancel_head_timer()
        waiting_after = self.cycle
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out, waiting_after)

    def _head_timed_out(self, waiting_after) -> None:
        self._head_timer = None
        if self.cycle is waiting_after and self.idle and not self.transport.is_closing():
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


class WebServer:
    """uvicorn on its own thread, on a socket bound at construction (a taken port fails the start-up)."""

    def __init__(self, app: Callable, config) -> None:
        tls = config.tls
        if tls is not None:
            tls.check_files()
        self._socket = _bind(config.host, config.port)
        self._config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none", server_header=False,
            timeout_graceful_shutdown=3, limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
            http=GuardedH11Protocol,
            ssl_certfile=str(tls.cert) if tls else None, ssl_keyfile=str(tls.key) if tls else None,
            ssl_keyfile_password=tls.key_password.value().get_secret_value() if tls and tls.key_password else None)
        self._config.load()  # a certificate that does not load fails here, at start-up
        self._server = uvicorn.Server(self._config)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    def _serve(self) -> None:
        """Serve at a lower CPU priority than the cameras: on a busy box a page's requests wait, not the line.
        Linux gives each thread its own nice value, and the server's worker threads inherit it from this one."""
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + WEB_NICE))
        except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the cameras
            pass
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        self._thread.start()
        log.info("serving the page, /metrics and /healthz on %s port %d", self.scheme, self.port,
                 extra={"port": self.port})

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(MAX_CONNECTIONS)  # connections wait in the backlog until the server's loop runs
    except OSError:
        sock.close()
        raise
    return sock
