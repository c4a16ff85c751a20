"""The station's web port: its page, the JSON API behind it, live events, evidence files, /metrics and /healthz.

A Starlette app served by uvicorn on one thread of its own (one event loop; the blocking handlers,
database reads and JPEG work, run in its small thread pool). Reading is open to whoever reaches the
port (it binds 127.0.0.1 unless told otherwise); a review needs a token or a user from the station's
secrets (:mod:`runtime.station.access`). Evidence is served only from inside the evidence folder.
"""

from __future__ import annotations

import asyncio
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
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runtime import package_version
from runtime.station.access import Access, cross_site
from runtime.station.evidence import frame_path
from runtime.station.history import History
from runtime.station.live import LiveFeed
from runtime.station.review import ReviewError, Reviews

if TYPE_CHECKING:
    from runtime.station.service import Station

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page")
KEEPALIVE_S = 15.0
THUMB_PX = 160
MAX_LIST = 500
MAX_REVIEWED_TAR = 5000  # the newest reviewed frames one download carries
VERDICT_FOLDERS = ("normal", "defect")
CHART_BUCKETS = 360
WEB_NICE = 5  # the web server's threads run this much "nicer" than the camera threads
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


def _reviewed_frames(folder: Path) -> list[Path]:
    """The frames filed in one reviewed folder (what review.py writes: .jpg, .png).

    The page's count and the tar both use this, so the count says what a download carries; anything
    else in the folder (a note, a temporary file) is neither counted nor sent.
    """
    try:
        with os.scandir(folder) as entries:
            return [Path(entry.path) for entry in entries if entry.is_file() and not entry.name.startswith(".")
                    and entry.name.lower().endswith((".jpg", ".png"))]
    except OSError:  # nothing reviewed yet
        return []


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


def _number(params, name: str, default: float | None = None) -> float | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value[:40]!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite")
    return number


class StationPage:
    """The page of one station: builds the history, the live feed, reviews and the app; ``observe`` is what
    each camera's inspector calls after every inspection."""

    def __init__(self, station: Station) -> None:
        config = station.config
        self.station = station
        self.config = config.http
        self.history = History(config.state_dir / "history.sqlite", config.http.history.max_inspections,
                               config.http.history.max_days)
        self.live = LiveFeed(config.http.live_fps)
        self.access = Access.from_config(config.http)
        self.reviews = Reviews(config.station, config.state_dir / "reviewed", self.history, station.outbox,
                               station.topics, station.link_notify, self.live)
        self.evidence_dir = config.evidence.dir.resolve() if station.evidence is not None else None
        self._thumbnails = _Thumbnails()
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
        return Starlette(routes=routes)

    def index(self, request: Request) -> Response:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    def healthz(self, request: Request) -> JSONResponse:
        healthy, details = self.station.health()
        return JSONResponse({"status": "ok" if healthy else "degraded", **details}, status_code=200 if healthy else 503)

    def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.station.stats.registry), media_type=CONTENT_TYPE_LATEST)

    def api_status(self, request: Request) -> JSONResponse:
        station = self.station
        healthy, health = station.health()
        beat, status = station.heartbeat(), station.status()
        cameras = {}
        for name, described in status["cameras"].items():
            worker = station.workers.get(name)
            loaded = worker.inspector.loaded if worker is not None else None
            signature = loaded.detector.bundle.manifest.signature if loaded is not None else None
            cameras[name] = {**beat["cameras"].get(name, {}), **described,
                             "threshold": loaded.info.threshold if loaded else None,
                             "reviewed": {verdict: len(_reviewed_frames(self.reviews.folder / name / verdict))
                                          for verdict in VERDICT_FOLDERS},
                             "signature": {"signed": signature is not None,
                                           "key_id": signature.key_id if signature else None,
                                           "verified": signature is not None and station.trust is not None}}
        evidence = station.evidence
        disk = shutil.disk_usage(self.evidence_dir) if self.evidence_dir else None
        return JSONResponse({
            "station": station.config.station, "version": package_version(), "healthy": healthy,
            "problems": health["problems"], "uptime_s": beat["uptime_s"], "timestamp": beat["timestamp"],
            "mqtt": beat["mqtt"], "outbox": beat["outbox"] | {"write_failures": station.outbox.write_failures},
            "evidence": {"bytes": evidence.total_bytes if evidence else 0,
                         "max_bytes": evidence.max_bytes if evidence else 0,
                         "disk_free_bytes": disk.free if disk else None, "save": station.config.evidence.save},
            "history": {"inspections": self.history.count(), "write_failures": self.history.write_failures},
            "review": {"enabled": self.access.enabled, "methods": self.access.methods},
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
            limit = int(_number(params, "limit", 50))
            before = _number(params, "before")
        except ValueError as exc:
            return _error(400, str(exc))
        rows = self.history.search(camera=params.get("camera") or None, label=verdict,
                                   kind=params.get("kind") or None, since=since, until=until, reviewed=reviewed,
                                   limit=max(1, min(limit, MAX_LIST)),
                                   before_row=int(before) if before is not None else None)
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
        ``Last-Event-ID`` within the ring."""
        live = self.live
        try:
            last = int(request.headers.get("last-event-id") or live.last_number)
        except ValueError:
            last = live.last_number

        async def stream():
            nonlocal last
            wake = live.listen()
            try:
                yield "retry: 2000\n\n"
                while not live.closing:
                    wake.clear()
                    for number, name, data in live.events_after(last):
                        last = number
                        yield f"id: {number}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
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
        if self.access.locked_out(client):
            return None, _error(429, "too many failed logins from this address: wait a minute")
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
        if camera not in self.station.workers or verdict not in VERDICT_FOLDERS:
            return _error(404, f"no camera {camera[:64]!r} or verdict {verdict[:16]!r} (normal or defect)")
        # files are named by inspection id (random), so "newest" is by the time they were filed
        frames = sorted(_reviewed_frames(self.reviews.folder / camera / verdict), key=lambda p: p.stat().st_mtime_ns)
        if not frames:
            return _error(404, f"no frames reviewed as {verdict} on camera {camera} yet")
        frames = frames[-MAX_REVIEWED_TAR:]
        archive = await asyncio.to_thread(_tar_of, frames, f"{camera}-{verdict}", self.reviews.folder)
        log.info("%d reviewed %s frames of camera %s downloaded by %s", len(frames), verdict, camera, who,
                 extra={"camera": camera})
        return FileResponse(archive, media_type="application/x-tar", filename=f"{camera}-reviewed-{verdict}.tar",
                            background=BackgroundTask(archive.unlink, missing_ok=True))

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
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                return {}, _error(413, f"request body over {limit} bytes")
        try:
            body = json.loads(data or b"{}")
        except (ValueError, RecursionError):
            return {}, _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return {}, _error(400, "body must be a JSON object")
        return body, None


class WebServer:
    """uvicorn on its own thread, on a socket bound at construction (a taken port fails the start-up)."""

    def __init__(self, app: Callable, config) -> None:
        tls = config.tls
        if tls is not None:
            tls.check_files()
        self._socket = _bind(config.host, config.port)
        self._config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none", server_header=False,
            timeout_graceful_shutdown=3, limit_concurrency=200,
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
    except OSError:
        sock.close()
        raise
    return sock
