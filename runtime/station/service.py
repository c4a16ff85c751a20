"""The station process: wires config, outbox, MQTT, cameras, evidence, metrics and signals together.

Start-up fails fast on what an operator must fix (bad config, a bundle failing its hash check,
credentials the broker refuses) and tolerates what fixes itself (a broker or camera that is
not there yet). SIGTERM drains: cameras finish the frame in hand, the outbox is given
``drain_timeout_s`` to empty, ``offline`` is published, and whatever is left waits on disk for
the next start. SIGHUP re-reads the config and applies camera changes in place.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from runtime.station.config import CameraConfig, ConfigError, StationConfig, load_config
from runtime.station.evidence import EvidenceStore
from runtime.station.health import HealthServer
from runtime.station.inspection import Inspector, LoadedBundle, load_bundle
from runtime.station.logs import setup_logging
from runtime.station.messages import Topics, error_message, iso_time, status_message
from runtime.station.mqtt import MqttLink
from runtime.station.outbox import Outbox
from runtime.station.stats import StationStats
from runtime.station.workers import OK, CameraWorker, Trigger

log = logging.getLogger(__name__)

# Settings that belong to the process, not to a camera: SIGHUP reports them, a restart applies them.
RESTART_ONLY = ("station", "prefix", "mqtt", "outbox", "evidence", "http")
ENGINE_FIELDS = ("bundle", "backend", "device", "threads", "self_test")
MAX_PART_ID = 128


class CommandError(ValueError):
    """A command that cannot be carried out; answered on ``cmd/error``."""


class Station:
    def __init__(self, config_path: Path, config: StationConfig) -> None:
        self.config_path = config_path
        self.config = config
        self.started = time.time()
        self.topics = Topics(config.prefix, config.station)
        self.stats = StationStats()
        self.outbox = Outbox(config.outbox.path, config.outbox.max_results)
        evidence = config.evidence
        self.evidence = None if evidence.save == "none" else EvidenceStore(
            evidence.dir, int(evidence.max_mb * 1024 * 1024), evidence.jpeg_quality)
        self._wakeup = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._reload_lock = threading.Lock()
        shared: dict[tuple, LoadedBundle] = {}
        self.workers: dict[str, CameraWorker] = {}
        for camera in config.cameras:
            key = (camera.bundle.resolve(), camera.backend, camera.device, camera.threads, camera.self_test)
            if key not in shared:
                shared[key] = load_bundle(camera.bundle, camera)
            self.workers[camera.name] = self._make_worker(camera, shared[key])
        self.link = MqttLink(config.mqtt, self.topics, config.mqtt.client_id or f"edge-anomaly-{config.station}",
                             self.outbox, self.handle_command, self.status)
        self.stats.gauge("edge_anomaly_outbox_pending", "Messages awaiting broker acknowledgement",
                         self.outbox.pending)
        self.stats.gauge("edge_anomaly_outbox_dropped_results", "Results dropped from a full outbox since start",
                         lambda: self.outbox.dropped_results)
        self.stats.gauge("edge_anomaly_mqtt_connected", "1 while connected to the broker",
                         lambda: float(self.link.connected))
        self.stats.gauge("edge_anomaly_mqtt_delivered", "Outbox messages acknowledged by the broker since start",
                         lambda: self.link.delivered)
        self.http = HealthServer(config.http.host, config.http.port, self.stats.registry, self.health) \
            if config.http.enabled else None

    def _make_worker(self, camera: CameraConfig, loaded: LoadedBundle) -> CameraWorker:
        inspector = Inspector(self.config.station, camera, loaded, self.topics, self.outbox, self.link_notify,
                              self.stats, self.evidence, self.config.evidence.save)
        return CameraWorker(camera, inspector, self.stats, self.on_camera_state, self.answer_trigger_error)

    def link_notify(self) -> None:
        self.link.notify()

    # -- what the station tells the world ---------------------------------------------------------

    def status(self) -> dict:
        return status_message(self.config.station, {name: worker.describe() for name, worker in self.workers.items()},
                              self.started) | {"pid": os.getpid()}

    def heartbeat(self) -> dict:
        cameras = {name: {"state": worker.state, **self.stats.summary(name)} for name, worker in self.workers.items()}
        return {
            "station": self.config.station, "timestamp": iso_time(), "uptime_s": round(time.time() - self.started, 1),
            "frames": sum(c["frames"] for c in cameras.values()),
            "anomalies": sum(c["anomalies"] for c in cameras.values()),
            "errors": sum(c["errors"] for c in cameras.values()) + self.stats.command_errors,
            "cameras": cameras,
            "commands": {"errors": self.stats.command_errors},
            "outbox": {"pending": self.outbox.pending(), "dropped_results": self.outbox.dropped_results},
            "mqtt": {"connected": self.link.connected, "connections": self.link.connects,
                     "delivered": self.link.delivered, "inflight": self.link.inflight},
            "evidence": {"bytes": self.evidence.total_bytes if self.evidence else 0},
        }

    def health(self) -> tuple[bool, dict]:
        problems = [f"camera {name} is {worker.state}" + (f" ({worker.error})" if worker.error else "")
                    for name, worker in self.workers.items() if worker.state != OK or not worker.alive]
        if not self.link.connected:
            problems.append("not connected to the broker")
        return not problems, {"problems": problems, "outbox_pending": self.outbox.pending(),
                              "cameras": {name: worker.state for name, worker in self.workers.items()}}

    def on_camera_state(self) -> None:
        self.link.publish_status()

    def _command_error(self, command: str, error: str, payload: bytes = b"", **fields: object) -> None:
        self.stats.command_error()
        log.warning("command %s refused: %s", command, error, extra={"command": command, **fields})
        self.link.publish_now(self.topics.command_error, error_message(command, error, payload, **fields), qos=1)

    def answer_trigger_error(self, trigger: Trigger, camera: str, error: str) -> None:
        self._command_error("inspect", error, part_id=trigger.part_id, camera=camera)

    # -- commands (called on the MQTT network thread: hand work off, never block) ----------------

    def handle_command(self, name: str, payload: bytes) -> None:
        body: dict = {}
        try:
            body = _parse_body(payload)
            if name == "inspect":
                self._command_inspect(body)
            elif name == "reload":
                self._command_reload(body)
            else:
                raise CommandError(f"unknown command {name!r} (known: inspect, reload)")
        except CommandError as exc:
            fields = {key: body[key] for key in ("part_id", "camera") if key in body}
            self._command_error(name, str(exc), payload, **fields)

    def _target_cameras(self, body: dict, mode: str | None = None) -> list[CameraWorker]:
        camera = body.get("camera")
        if camera is not None:
            if camera not in self.workers:
                raise CommandError(f"unknown camera {camera!r} (cameras: {', '.join(self.workers)})")
            worker = self.workers[camera]
            if mode is not None and worker.config.mode != mode:
                raise CommandError(f"camera {camera!r} runs in {worker.config.mode!r} mode, not {mode!r}")
            return [worker]
        workers = [w for w in self.workers.values() if mode is None or w.config.mode == mode]
        if not workers:
            raise CommandError(f"no camera of this station runs in {mode!r} mode")
        return workers

    def _command_inspect(self, body: dict) -> None:
        part_id = body.get("part_id")
        if isinstance(part_id, int) and not isinstance(part_id, bool):
            part_id = str(part_id)
        if not isinstance(part_id, str) or not part_id.strip() or len(part_id) > MAX_PART_ID:
            raise CommandError(f"'part_id' must be a non-empty string of at most {MAX_PART_ID} characters, "
                               f"got {part_id!r}")
        for worker in self._target_cameras(body, mode="trigger"):
            worker.trigger(part_id)

    def _command_reload(self, body: dict) -> None:
        bundle = body.get("bundle")
        if bundle is not None and not isinstance(bundle, str):
            raise CommandError(f"'bundle' must be a path, got {bundle!r}")
        workers = self._target_cameras(body)
        if bundle is not None and len(workers) > 1:
            raise CommandError("this station has several cameras: name the 'camera' whose bundle to replace")
        threading.Thread(target=self.reload_bundles, args=([w.name for w in workers], bundle),
                         name="reload", daemon=True).start()

    def reload_bundles(self, cameras: list[str], bundle: str | None) -> None:
        """Load each camera's new bundle (default: its configured path) and swap it in; a bundle that fails
        to load, its hash check included, is refused and the running one stays."""
        with self._reload_lock:
            for name in cameras:
                worker = self.workers[name]
                path = Path(bundle) if bundle else worker.config.bundle
                old = worker.inspector.loaded.info
                try:
                    loaded = load_bundle(path, worker.config)
                except Exception as exc:
                    self._command_error("reload", f"bundle {path} refused: {exc}; camera {name} keeps "
                                        f"{old.name} ({old.hash[:12]})", camera=name, bundle=str(path))
                    continue
                worker.inspector.swap(loaded)
                log.info("camera %s now runs bundle %s (%s), was %s (%s)", name, loaded.info.name,
                         loaded.info.hash[:12], old.name, old.hash[:12],
                         extra={"camera": name, "bundle": loaded.info.name, "hash": loaded.info.hash})
        self.link.publish_status()

    # -- life cycle ---------------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True
        self._wakeup.set()

    def request_reload(self, *_: object) -> None:
        self._reload_requested = True
        self._wakeup.set()

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; raises BrokerRefused if the broker rejects the daemon at start-up."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        pending = self.outbox.pending()
        if pending:
            log.info("outbox holds %d message(s) from an earlier run; delivering them first", pending)
        self.link.start()
        if self.http is not None:
            self.http.start()
        for worker in self.workers.values():
            worker.start()
        log.info("station %s serving %d camera(s)", self.config.station, len(self.workers),
                 extra={"station": self.config.station, "cameras": list(self.workers)})
        next_beat = time.monotonic()
        while not self._stop_requested:
            if time.monotonic() >= next_beat:
                self.link.publish_now(self.topics.heartbeat, self.heartbeat())
                next_beat = time.monotonic() + self.config.heartbeat_s
            self._wakeup.wait(max(0.0, min(1.0, next_beat - time.monotonic())))
            self._wakeup.clear()
            if self._reload_requested:
                self._reload_requested = False
                self.apply_config()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("draining: finishing frames in hand, delivering the outbox (up to %.0f s)",
                 self.config.drain_timeout_s)
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join(timeout=30)
        if self.link.connected:
            self.link.drain(self.config.drain_timeout_s)
        self.link.publish_now(self.topics.heartbeat, self.heartbeat())
        self.link.stop()
        if self.http is not None:
            self.http.stop()
        left = self.outbox.pending()
        self.outbox.close()
        log.info("stopped; %d message(s) wait in the outbox for the next start", left, extra={"outbox_pending": left})

    def apply_config(self) -> None:
        """SIGHUP: re-read the file; apply camera, heartbeat and log changes; keep everything on error."""
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: %s; keeping the running config", exc)
            return
        old = self.config
        needs_restart = [name for name in RESTART_ONLY if getattr(new, name) != getattr(old, name)]
        if needs_restart:
            log.warning("SIGHUP: %s changed; restart the daemon to apply", ", ".join(needs_restart))
        setup_logging(new.log.level, new.log.format)
        self.config = old.model_copy(update={name: getattr(new, name) for name in StationConfig.model_fields
                                             if name not in RESTART_ONLY})
        before = {camera.name: camera for camera in old.cameras}
        for name in set(before) - {camera.name for camera in new.cameras}:
            worker = self.workers.pop(name)
            worker.stop()
            worker.join(timeout=30)
            log.info("SIGHUP: camera %s removed", name)
        for camera in new.cameras:
            self._apply_camera(before.get(camera.name), camera)
        log.info("SIGHUP: config %s applied", self.config_path)
        self.link.publish_status()

    def _apply_camera(self, old: CameraConfig | None, new: CameraConfig) -> None:
        if old == new:
            return
        worker = self.workers.get(new.name)
        try:
            engine_changed = old is None or any(getattr(old, f) != getattr(new, f) for f in ENGINE_FIELDS)
            loaded = load_bundle(new.bundle, new) if engine_changed else worker.inspector.loaded
        except Exception as exc:
            log.error("SIGHUP: camera %s keeps its running setup: bundle %s refused: %s", new.name, new.bundle, exc,
                      extra={"camera": new.name})
            return
        if worker is not None and old.model_copy(update={f: getattr(new, f) for f in ENGINE_FIELDS}) == new:
            worker.config = new
            worker.inspector.camera = new
            worker.inspector.swap(loaded)  # only the engine changed: no restart, no frame lost
            return
        if worker is not None:
            worker.stop()
            worker.join(timeout=30)
        replacement = self._make_worker(new, loaded)
        self.workers[new.name] = replacement
        replacement.start()
        log.info("SIGHUP: camera %s (re)started in %s mode", new.name, new.mode)


def _parse_body(payload: bytes) -> dict:
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise CommandError(f"payload must be a JSON object, got {type(body).__name__}")
    return body


def check(config: StationConfig) -> None:
    """``serve --check``: secrets, TLS files and every bundle (hashes included), without binding or connecting."""
    if config.mqtt.tls is not None:
        config.mqtt.tls.check_files()
    for camera in config.cameras:
        info = load_bundle(camera.bundle, camera).info
        print(f"camera {camera.name}: {camera.mode}, bundle {info.name} ({info.hash[:12]}) verified")


def serve(config_path: str | Path, check_only: bool = False) -> None:
    """``edge-anomaly serve``: run the station described by ``config_path`` until SIGTERM."""
    config = load_config(config_path)
    if check_only:
        check(config)
        print(f"config {config_path} is valid")
        return
    setup_logging(config.log.level, config.log.format)
    log.info("config %s loaded", config_path, extra={"config": config.model_dump(mode="json")})
    Station(Path(config_path), config).run()
