"""A small MJPEG-over-HTTP camera for the tests: serves real frames as multipart/x-mixed-replace.

It stands in for an IP camera: OpenCV reads it through FFmpeg exactly as it reads a real one,
and the tests can stop it mid-stream and start it again on the same port.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "edgeanomalyframe"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MjpegCamera:
    """Serves ``frames`` (RGB) in a loop at ``fps`` on http://127.0.0.1:<port>/stream.mjpg.

    ``garbage_every`` > 0 replaces every that-many-th part with bytes that are not a JPEG.
    """

    def __init__(self, frames: list[np.ndarray], port: int, fps: float = 20.0, garbage_every: int = 0) -> None:
        self.parts = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in frames]
        self.port = port
        self.fps = fps
        self.garbage_every = garbage_every
        self.sent = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return None

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                index = 0
                try:
                    while camera.server is not None:
                        part = camera.parts[index % len(camera.parts)]
                        if camera.garbage_every and index % camera.garbage_every == camera.garbage_every - 1:
                            part = b"\xff\xd8 this is not a jpeg " * 20
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(part)}\r\n\r\n".encode() + part + b"\r\n")
                        camera.sent += 1
                        index += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: the camera drops off the network."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.thread.join()
