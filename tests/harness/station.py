"""Station test harness (conftest.py, the tests and bench/daemon.py use it): a real mosquitto, the station as a
real subprocess, a paho probe client.

The broker runs on a free loopback port with a generated config (anonymous or a password file
made by ``mosquitto_passwd``; persistence off unless a test needs durable subscriber sessions)
and can be stopped and restarted on the same port. Tests skip with the reason when the
``mosquitto`` binary is absent; CI installs it (see .ci/run).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

PREFIX = "plant"
STATION = "line1"


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((str(Path(d) / name) for d in ("/usr/sbin", "/usr/local/sbin")
                                       if (Path(d) / name).is_file()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def patience(seconds: float) -> float:
    """A timeout that scales with the machine's load: ``seconds`` on a quiet machine, stretched by the load
    average per core beyond 1 (at load 8 on 2 cores, four times as long). A wait that is a property under
    test (a rate, a bound) does not go through here; a wait for something to happen at all does."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """``condition()`` once it is true; ``timeout`` is for a quiet machine (see :func:`patience`)."""
    timeout = patience(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Broker:
    """A mosquitto process on 127.0.0.1:<port>; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, persistence: bool = False,
                 tls: dict[str, Path] | None = None, settings: list[str] | None = None) -> None:
        self.binary = _binary("mosquitto")
        if self.binary is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto); the daemon tests need a real broker")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        # "user": mosquitto started as root would switch to user mosquitto, which cannot read pytest's tmp dirs
        lines = [f"listener {self.port} 127.0.0.1", f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {folder}/", "log_dest stderr", "log_type error", "log_type warning",
                 "set_tcp_nodelay true"]  # like the station: no Nagle delay on small packets
        if users:
            passwords = folder / "passwords"
            passwords.touch()
            for user, password in users.items():
                subprocess.run([_binary("mosquitto_passwd"), "-b", str(passwords), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.tls_port = free_port() if tls else None
        if tls:  # a second listener that wants TLS and a client certificate signed by the test CA
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls['ca']}", f"certfile {tls['server_cert']}",
                      f"keyfile {tls['server_key']}", "require_certificate true"]
        lines += settings or []  # e.g. "max_queued_messages 100000"
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        log = open(self.folder / "mosquitto.log", "ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        wait_until(self._accepting, 10, f"mosquitto on port {self.port}")

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: a persistent broker saves its sessions
            self.process.wait(timeout=10)
        self.process = None




def make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed; the TLS test needs it to make certificates")
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem",
                                              "client.key", "other-ca.pem", "other-ca.key")}
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", *new_key, "-keyout", str(files[f"{ca}.key"]), "-out", str(files[f"{ca}.pem"]),
            "-subj", f"/CN={ca}", "-days", "2")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for role, subject in (("server", "127.0.0.1"), ("client", "line1")):
        csr = folder / f"{role}.csr"
        run("req", *new_key, "-keyout", str(files[f"{role}.key"]), "-out", str(csr), "-subj", f"/CN={subject}")
        run("x509", "-req", "-in", str(csr), "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
            "-CAcreateserial", "-out", str(files[f"{role}.pem"]), "-days", "2", "-extfile", str(folder / "san.ext"))
    return {"ca": files["ca.pem"], "server_cert": files["server.pem"], "server_key": files["server.key"],
            "client_cert": files["client.pem"], "client_key": files["client.key"], "other_ca": files["other-ca.pem"]}


@dataclass
class Received:
    topic: str
    raw: bytes
    retain: bool
    dup: bool
    at: float

    @property
    def data(self) -> dict | None:
        try:
            return json.loads(self.raw)
        except ValueError:
            return None


class Probe:
    """A paho client standing in for the PLC / dashboard: records everything under the station."""

    def __init__(self, port: int, client_id: str = "", durable: bool = False, topic: str = f"{PREFIX}/#",
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[Received] = []
        self.subscriptions = 0  # SUBACKs received: one per (re)connection
        self._condition = threading.Condition()
        self.topic = topic
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not durable)
        self.client.on_connect = lambda client, *_: client.subscribe(self.topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the station does: timings without Nagle's delay
        self.client.reconnect_delay_set(0.1, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: self.subscriptions, 5, "the probe to subscribe")

    def _on_subscribe(self, *_) -> None:
        self.subscriptions += 1

    def _on_message(self, client, userdata, message) -> None:
        with self._condition:
            self.messages.append(Received(message.topic, message.payload, message.retain, bool(message.dup),
                                          time.time()))
            self._condition.notify_all()

    def on(self, suffix: str) -> list[Received]:
        with self._condition:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, suffix: str, predicate: Callable[[dict], bool] = lambda data: True, count: int = 1,
                 timeout: float = 15.0) -> list[Received]:
        """The first ``count`` messages on a topic ending in ``suffix`` whose JSON satisfies ``predicate``
        (``timeout``: on a quiet machine, see :func:`patience`)."""
        timeout = patience(timeout)

        def matching() -> list[Received]:
            return [m for m in self.messages if m.topic.endswith(suffix) and m.data is not None
                    and predicate(m.data)]

        with self._condition:
            if not self._condition.wait_for(lambda: len(matching()) >= count, timeout):
                raise AssertionError(f"timed out waiting for {count} message(s) on *{suffix}; got {len(matching())}; "
                                     f"topics seen: {sorted({m.topic for m in self.messages})}")
            return matching()[:count]

    def publish(self, topic: str, payload: bytes | str | dict) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(f"{PREFIX}/{STATION}/{topic}", payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def station_config(port: int, cameras: list[dict], **overrides) -> dict:
    """A station.yaml as a dict: short intervals so the tests stay fast."""
    config = {
        "station": STATION, "prefix": PREFIX,
        "mqtt": {"host": "127.0.0.1", "port": port, "connect_timeout_s": 2, "reconnect": {"min_s": 0.2, "max_s": 1}},
        "heartbeat_s": 1, "drain_timeout_s": 5, "state_dir": ".",
        "http": {"enabled": False},
        "cameras": cameras,
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return config


class DaemonProcess:
    """``python -m edge_anomaly serve`` as a real child process, so signals and kill -9 are real."""

    def __init__(self, folder: Path, config: dict, env: dict | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "station.yaml"
        self.write_config(config)
        self.log_path = folder / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> DaemonProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "edge_anomaly", "serve", "--config",
                                         str(self.config_path)], stdout=log, stderr=log, cwd=self.folder,
                                        env=self.env)
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.is_file() else ""

    def log_entries(self) -> list[dict]:
        return [json.loads(line) for line in self.log.splitlines() if line.startswith("{")]

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=patience(timeout))

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.process.poll() is None:
            self.send(signal.SIGTERM)
        return self.wait()

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@dataclass
class StationLine:
    """A station under test with its broker and probe, kept by a module's fixture for its tests in file order;
    a module's own line adds what its tests need (bundles, images, certificates)."""

    broker: Broker
    daemon: DaemonProcess
    probe: Probe
    root: Path


def copy_images(sources: list[Path], folder: Path) -> list[Path]:
    """Copy images into ``folder`` as 000_<category>.png, ... so a replay reads them in this order."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, source in enumerate(sources):
        target = folder / f"{index:03d}_{source.parent.name}{source.suffix}"
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


def page_camera(boards: Path, bundle: Path, folder: Path) -> dict:
    """The page tests' camera: continuous at 4 frames/s over good and defective boards, so both verdicts come."""
    test = boards / "test"
    frames = copy_images([test / "good" / "000.png", test / "missing_component" / "000.png",
                          test / "good" / "001.png", test / "scratch" / "001.png"], folder)
    return {"name": "cam", "bundle": str(bundle), "mode": "continuous", "rate_hz": 4,
            "source": {"kind": "images", "path": str(frames[0].parent)}}


def fill_disk(folder: Path) -> Path:
    """Fill the filesystem under ``folder`` to the last byte with one file, returned (delete it to free the disk)."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def page_port(daemon: DaemonProcess, timeout: float = 30) -> int:
    """The port the station's web server bound (``http.port: 0`` lets the system choose), from its log."""
    return wait_until(lambda: next((e["port"] for e in daemon.log_entries() if "port" in e), None), timeout,
                      "the station's web port in its log")


def fetch(url: str, method: str = "GET", headers: dict | None = None, body: bytes | dict | None = None,
          context=None, timeout: float = 10) -> tuple[int, object, bytes]:
    """(status, headers, body) of one HTTP(S) request; error statuses are returned, not raised."""
    import urllib.error
    import urllib.request

    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
