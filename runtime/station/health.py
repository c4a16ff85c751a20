"""The operations port: Prometheus ``/metrics`` and ``/healthz`` on one small HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds would flood the log
        pass


class HealthServer:
    """``health()`` returns (healthy, details); ``/healthz`` answers 200 or 503 with the details as JSON."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 health: Callable[[], tuple[bool, dict]]) -> None:
        self._metrics = make_wsgi_app(registry)
        self._health = health
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz":
            healthy, details = self._health()
            body = json.dumps({"status": "ok" if healthy else "degraded", **details}).encode()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def start(self) -> None:
        self._thread.start()
        log.info("serving /metrics and /healthz on port %d", self.port, extra={"port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
