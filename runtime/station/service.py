"""The station process: wires config, outbox, MQTT, cameras, evidence, metrics and signals together.

Start-up fails fast on what an operator must fix (bad config, a bundle failing its hash check,
credentials the broker refuses) and tolerates what fixes itself (a broker or camera that is
not there yet). SIGTERM drains: cameras finish the frame in hand, the outbox is given
``drain_timeout_s`` to empty, ``offline`` is published, and whatever is left waits on disk for
the next start. SIGHUP re-reads the config and applies camera changes in place.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runtime.signing import TrustList
from runtime.station.config import CameraConfig, ConfigError, StationConfig, load_config
from runtime.station.evidence import EvidenceStore
from runtime.station.history import HISTORY, corruption
from runtime.station.inspection import Inspector, LoadedBundle, load_bundle
from runtime.station.logs import setup_logging
from runtime.station.messages import Topics, error_message, iso_time, status_message
from runtime.station.mqtt import MqttLink
from runtime.station.outbox import ERROR, Outbox
from runtime.station.stats import StationStats
from runtime.station.web import StationPage
from runtime.station.workers import OK, SHUTTING_DOWN, CameraWorker, Trigger

log = logging.getLogger(__name__)

# Settings that belong to the process, not to a camera: SIGHUP reports them, a restart applies them.
RESTART_ONLY = ("station", "prefix", "mqtt", "outbox", "evidence", "http", "state_dir", "trust", "commands",
                "bundles_dir", "opcua", "batching")
ENGINE_FIELDS = ("bundle", "backend", "device", "threads", "roi", "self_test")
MAX_PART_ID = 128
SCRATCH = "tmp"  # under state_dir: the station's own temporary folder
STALL_S = 60.0  # a worker that shows no sign of life this long (outside an inspection) is reported stalled


class CommandError(ValueError):
    """A command that cannot be carried out; answered on ``cmd/error``."""


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of something a client sent, cut short: error answers never echo a payload whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class QueueWorker:
    """A long-lived thread handling queued items one at a time (commands, reloads): a failing item is
    logged and counted, never ends the thread; ``beat`` shows it is alive; stopping joins it."""

    def __init__(self, name: str, handle: Callable[..., None], size: int) -> None:
        self.name = name
        self.failures = 0
        self.beat = time.monotonic()
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def put(self, *item: object) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while True:
            self.beat = time.monotonic()
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if item == ():
                return
            try:
                self._handle(*item)
            except Exception:
                self.failures += 1
                log.exception("%s: handling an item failed", self.name)

    def stop(self) -> list[tuple]:
        """Finish what is queued, then end the thread (joined: nothing is left running at exit); returns
        the items that arrived after the stop, for the caller to answer."""
        if self._thread.is_alive():
            self._queue.put(())
            self._thread.join()
        left = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item != ():
                left.append(item)
        return left


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
        self._stopping = False  # set at SIGTERM: new commands are answered "shutting down"
        self._accepting = threading.Lock()
        self._reload_requested = False
        self._reload_lock = threading.Lock()
        self.trust = TrustList.load(config.trust) if config.trust else None
        self.page = StationPage(self) if config.http.enabled else None  # binds its port: a taken one fails here
        self.opcua = None
        if config.opcua.enabled:  # asyncua is an optional extra: imported only when the server is wanted
            from runtime.station.opcua.server import OpcUaServer

            self.opcua = OpcUaServer(config.opcua, self)
        shared: dict[tuple, LoadedBundle] = {}
        self.workers: dict[str, CameraWorker] = {}
        keys = [(c.bundle.resolve(), c.backend, c.device, c.threads, c.roi, c.self_test) for c in config.cameras]
        for camera, key in zip(config.cameras, keys, strict=True):
            if key not in shared:
                shared[key] = load_bundle(camera.bundle, camera, self.trust, keys.count(key), config.batching)
            self.workers[camera.name] = self._make_worker(camera, shared[key])
        self._answer_unanswered_triggers()
        self.commands = QueueWorker("commands", self._run_command, 1000)
        self.reloads = QueueWorker("reload", self.reload_bundles, 16)
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
        self.stats.gauge("edge_anomaly_outbox_write_failures", "Outbox writes that failed (disk full) and were retried",
                         lambda: self.outbox.write_failures)
        self.stats.gauge("edge_anomaly_outbox_held", "Messages held in memory until the outbox can be written",
                         lambda: self.outbox.held)

    def _make_worker(self, camera: CameraConfig, loaded: LoadedBundle) -> CameraWorker:
        inspector = Inspector(self.config.station, camera, loaded, self.topics, self.outbox, self.link_notify,
                              self.stats, self.evidence, self.config.evidence.save, self._observe)
        return CameraWorker(camera, inspector, self.stats, self.on_camera_state, self.answer_trigger_error)

    def link_notify(self) -> None:
        self.link.notify()

    def _observe(self, inspection, frame) -> None:
        """Every inspection, after its messages are in the outbox: the page's history and the OPC UA server."""
        if self.page is not None:
            self.page.observe(inspection, frame)
        if self.opcua is not None:
            self.opcua.observe(inspection)

    # -- what the station tells the world ---------------------------------------------------------

    def status(self) -> dict:
        cameras = {name: worker.describe() | {"drift": worker.inspector.drift_state,
                                              "capture_warning": worker.inspector.capture_warning}
                   for name, worker in self.workers.items()}
        return status_message(self.config.station, cameras, self.started) | {"pid": os.getpid()}

    def heartbeat(self) -> dict:
        cameras = {name: {"state": worker.state, **self.stats.summary(name), "drift": worker.inspector.drift_state,
                          "capture_warning": worker.inspector.capture_warning}
                   for name, worker in self.workers.items()}
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

    def problems(self) -> list[str]:
        """Everything that keeps the station from doing its job right now; empty when healthy."""
        now = time.monotonic()
        problems = []
        for name, worker in self.workers.items():
            if not worker.alive and not self._stopping:
                problems.append(f"camera {name}: worker thread is dead ({worker.error or 'no error recorded'})")
            elif worker.state != OK:
                problems.append(f"camera {name} is {worker.state}" + (f" ({worker.error})" if worker.error else ""))
            elif worker.busy_since is None and now - worker.beat > STALL_S:
                problems.append(f"camera {name}: worker stalled (no progress for {now - worker.beat:.0f} s)")
        if not self.link.sender_alive:
            problems.append("mqtt sender thread is dead: nothing is delivered")
        elif now - self.link.sender_beat > STALL_S:
            problems.append(f"mqtt sender stalled (no progress for {now - self.link.sender_beat:.0f} s)")
        for worker in (self.commands, self.reloads):
            if not worker.alive and not self._stopping:
                problems.append(f"{worker.name} thread is dead: commands are not served")
        if self.opcua is not None and not self.opcua.alive and not self._stopping:
            problems.append("opcua server thread is dead: PLCs and MES get no answers")
        if self.outbox.problem:
            problems.append(self.outbox.problem)
        if self.page is not None and self.page.history.problem:
            problems.append(self.page.history.problem)
        if not self.link.connected:
            problems.append("not connected to the broker")
        return problems

    def health(self) -> tuple[bool, dict]:
        problems = self.problems()
        return not problems, {"problems": problems, "outbox_pending": self.outbox.pending(),
                              "outbox_write_failures": self.outbox.write_failures,
                              "cameras": {name: worker.state for name, worker in self.workers.items()}}

    def supervise(self) -> None:
        """Restart what died (the sender, a camera loop, the command threads); /healthz said why meanwhile."""
        if self._stopping:
            return
        if not self.link.sender_alive:
            log.error("mqtt sender thread died; restarting it")
            self.link.restart_sender()
        for name, worker in list(self.workers.items()):
            if not worker.alive:
                log.error("camera %s worker thread died; restarting it", name, extra={"camera": name})
                replacement = self._make_worker(worker.config, worker.inspector.loaded)
                self.workers[name] = replacement
                replacement.start()
        for attribute, handle, size in (("commands", self._run_command, 1000), ("reloads", self.reload_bundles, 16)):
            if not getattr(self, attribute).alive:
                log.error("%s thread died; restarting it", attribute)
                setattr(self, attribute, QueueWorker(getattr(self, attribute).name, handle, size))
                getattr(self, attribute).start()

    def on_camera_state(self) -> None:
        self.link.publish_status()

    def _command_error(self, command: str, error: str, payload: bytes = b"", **fields: object) -> None:
        """Answer on ``cmd/error`` through the outbox: in order with results, and delivered at a stop too."""
        self.stats.command_error()
        log.warning("command %s refused: %s", command[:64], error[:1000], extra={"command": command[:64], **fields})
        self.outbox.put(ERROR, self.topics.command_error, error_message(command, error, payload, **fields))
        self.link.notify()

    def answer_trigger_error(self, trigger: Trigger, camera: str, error: str) -> None:
        """An accepted trigger's answer when it cannot be inspected: through the outbox (it survives a stop)."""
        self.stats.command_error()
        log.warning("trigger %s on camera %s answered with an error: %s", trigger.part_id, camera, error,
                    extra={"part_id": trigger.part_id, "camera": camera})
        self.outbox.put(ERROR, self.topics.command_error,
                        error_message("inspect", error, part_id=trigger.part_id, camera=camera), answers=trigger.row)
        self.link.notify()
        if self.opcua is not None:
            self.opcua.trigger_failed(trigger.row, camera, error)

    def _answer_unanswered_triggers(self) -> None:
        """Triggers an earlier run accepted but never answered (it was killed): say so, naming each part."""
        for row, camera, part_id in self.outbox.unanswered_triggers():
            log.warning("trigger %s on camera %s was accepted by the previous run and never answered", part_id,
                        camera, extra={"part_id": part_id, "camera": camera})
            self.outbox.put(ERROR, self.topics.command_error, error_message(
                "inspect", "the station stopped (killed or crashed) before answering this trigger; inspect the part "
                "again", part_id=part_id, camera=camera), answers=row)

    # -- commands (the MQTT network thread only queues them: it never blocks) ----------------------

    def handle_command(self, name: str, sender: str | None, payload: bytes, retained: bool = False) -> None:
        limit = self.config.commands.max_bytes
        if len(payload) > limit:  # refused before parsing, and not queued
            self._command_error(name, f"payload of {len(payload)} bytes exceeds the limit of {limit}", payload)
            return
        if retained:  # the broker replays a retained command at every connect: it is never acted on
            self._command_error(name, f"retained message on cmd/{name[:40]} ignored: commands are taken only when "
                                "published live (clear it: publish an empty retained message on that topic)",
                                payload, **_answer_fields(payload))
            return
        with self._accepting:  # a command is queued before the stop, or refused after it: never lost between
            if not self._stopping:
                if not self.commands.put(name, sender, payload):
                    self._command_error(name, "busy: too many commands waiting", payload, **_answer_fields(payload))
                return
        self._refuse_at_stop(name, sender, payload)

    def _refuse_at_stop(self, name: str, sender: str | None, payload: bytes) -> None:
        """A command that arrives while the station stops: answered "shutting down" (with its part_id)."""
        self._run_command(name, sender, payload)  # _stopping makes it an answer, never an action

    def _run_command(self, name: str, sender: str | None, payload: bytes) -> None:
        body: dict = {}
        try:
            body = _parse_body(payload)
            self._authorise(name, sender, body)
            if self._stopping:
                raise CommandError(f"station is {SHUTTING_DOWN}")
            if name == "inspect":
                self._command_inspect(body)
            elif name == "reload":
                self._command_reload(body)
            else:
                raise CommandError(f"unknown command {name[:40]!r} (known: inspect, reload)")
        except CommandError as exc:
            self._command_error(name, str(exc), payload, **_answer_fields(body))
        except Exception as exc:  # a bug: answered all the same, with no traceback on the wire
            log.exception("command %s failed", name[:40])
            self._command_error(name, f"internal error ({type(exc).__name__}); see the station log", payload,
                                **_answer_fields(body))

    def _authorise(self, name: str, sender: str | None, body: dict) -> None:
        rules = self.config.commands
        allowed = rules.clients.get(name)
        if allowed is not None and sender not in allowed:
            raise CommandError(f"cmd/{name} is taken only from client ids {', '.join(allowed)} "
                               f"(published on cmd/{name}/<client id>)")
        if rules.hmac_key is None or name not in rules.hmac_commands:
            return
        given = body.pop("hmac", None)
        expected = hmac.new(rules.hmac_key.value().get_secret_value().encode(), command_digest_input(body),
                            hashlib.sha256).hexdigest()
        if not isinstance(given, str) or not hmac.compare_digest(given, expected):
            raise CommandError(f"cmd/{name} needs a valid 'hmac' (HMAC-SHA256 of the other fields, canonical JSON)")
        moment = body.get("ts")
        if not isinstance(moment, int | float) or abs(time.time() - moment) > rules.hmac_window_s:
            raise CommandError(f"cmd/{name}: 'ts' must be the current epoch time (within "
                               f"{rules.hmac_window_s:.0f} s): a replayed command is refused")

    def _target_cameras(self, body: dict, mode: str | None = None) -> list[CameraWorker]:
        camera = body.get("camera")
        if camera is not None and not isinstance(camera, str):
            raise CommandError(f"'camera' must be a camera name, got {type(camera).__name__}")
        if camera is not None:
            if camera not in self.workers:
                raise CommandError(f"unknown camera {_short(camera)} (cameras: {', '.join(self.workers)})")
            worker = self.workers[camera]
            if mode is not None and worker.config.mode != mode:
                raise CommandError(f"camera {camera!r} runs in {worker.config.mode!r} mode, not {mode!r}")
            return [worker]
        workers = [w for w in self.workers.values() if mode is None or w.config.mode == mode]
        if not workers:
            raise CommandError(f"no camera of this station runs in {mode!r} mode")
        return workers

    def _command_inspect(self, body: dict) -> None:
        part_id = checked_part_id(body.get("part_id"))
        for worker in self._target_cameras(body, mode="trigger"):
            self._accept_trigger(worker, part_id)

    def _accept_trigger(self, worker: CameraWorker, part_id: str) -> int:
        """Record the trigger in the outbox, then queue it; from here on it is answered, by a result or an error."""
        row = self.outbox.accept_trigger(worker.name, part_id)
        if not worker.trigger(Trigger(part_id, time.time(), time.perf_counter(), row)):
            self.answer_trigger_error(Trigger(part_id, time.time(), time.perf_counter(), row), worker.name,
                                      f"busy: camera {worker.name} already has {worker.waiting} trigger(s) "
                                      "waiting; this one is not inspected")
        return row

    def submit_trigger(self, camera: str, part_id: object) -> int:
        """A trigger from the OPC UA server (a method or the PLC handshake), with cmd/inspect's rules and guarantees;
        returns the trigger's outbox row, which its result (``Inspection.trigger``) or error names."""
        part_id = checked_part_id(part_id)
        with self._accepting:
            if self._stopping:
                raise CommandError(f"station is {SHUTTING_DOWN}")
            return self._accept_trigger(self._target_cameras({"camera": camera}, mode="trigger")[0], part_id)

    def reload_camera(self, camera: str, bundle: str) -> str | None:
        """OPC UA's PrepareRecipe: cmd/reload's checks (bundles_dir, drop folders, hashes, signature) and swap, done
        now; returns None when the camera runs the bundle, else why not (also answered on cmd/error, as cmd/reload).
        Raises CommandError for a camera or path that is refused before loading."""
        try:
            worker = self._target_cameras({"camera": camera})[0]
            path = self._allowed_bundle(bundle)
        except CommandError as exc:
            self._command_error("reload", str(exc), camera=camera)
            raise
        return self.reload_bundles([worker.name], path)[worker.name]

    def _command_reload(self, body: dict) -> None:
        bundle = body.get("bundle")
        if bundle is not None and not isinstance(bundle, str):
            raise CommandError(f"'bundle' must be a path, got {_short(bundle)}")
        workers = self._target_cameras(body)
        if bundle is not None and len(workers) > 1:
            raise CommandError("this station has several cameras: name the 'camera' whose bundle to replace")
        path = self._allowed_bundle(bundle) if bundle is not None else None
        if not self.reloads.put([w.name for w in workers], path):
            raise CommandError("busy: reloads are already queued")

    def _allowed_bundle(self, bundle: str) -> Path:
        """The bundle path, once it resolves (symlinks followed) inside ``bundles_dir`` and outside every
        watched drop folder: whoever can publish a command cannot make the station load a file they dropped."""
        roots = self.config.reload_roots
        path = Path(bundle) if Path(bundle).is_absolute() else roots[0] / bundle
        resolved = path.resolve()
        for drop in self.config.drop_folders:
            if resolved == drop or drop in resolved.parents:
                raise CommandError(f"bundle {_short(bundle)} lies in the watched drop folder {drop}: refused")
        if not any(root in resolved.parents for root in roots):
            raise CommandError(f"bundle {_short(bundle)} is outside bundles_dir "
                               f"({', '.join(str(root) for root in roots)}): refused")
        return resolved

    def reload_bundles(self, cameras: list[str], bundle: Path | None) -> dict[str, str | None]:
        """Load each camera's new bundle (default: its configured path) and swap it in; a bundle that fails
        to load, its hash and signature checks included, is refused and the running one stays. Returns each
        camera's refusal (None: it runs the new bundle)."""
        outcome: dict[str, str | None] = {}
        with self._reload_lock:
            for name in cameras:
                worker = self.workers[name]
                path = bundle or worker.config.bundle
                old = worker.inspector.loaded.info
                try:
                    loaded = load_bundle(path, worker.config, self.trust)
                except Exception as exc:
                    outcome[name] = f"bundle {path} refused: {exc}; camera {name} keeps {old.name} ({old.hash[:12]})"
                    self._command_error("reload", outcome[name], camera=name, bundle=str(path))
                    continue
                outcome[name] = None
                worker.inspector.swap(loaded)
                log.info("camera %s now runs bundle %s (%s), was %s (%s)", name, loaded.info.name,
                         loaded.info.hash[:12], old.name, old.hash[:12],
                         extra={"camera": name, "bundle": loaded.info.name, "hash": loaded.info.hash})
        self.link.publish_status()
        return outcome

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
        self.commands.start()
        self.reloads.start()
        self.link.start()
        if self.page is not None:
            self.page.start()
        if self.opcua is not None:
            self.opcua.start()  # a port taken or a certificate missing stops the station here
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
            self.supervise()
            if self._reload_requested:
                self._reload_requested = False
                self.apply_config()
        self.shutdown()

    def shutdown(self) -> None:
        """Answer every accepted trigger (the frame in hand is finished, the waiting ones get "shutting down"),
        deliver the outbox, and join every thread before the engines are released: a thread still inside an
        engine at interpreter exit is what crashed the station (exit 134/139)."""
        log.info("draining: finishing frames in hand, delivering the outbox (up to %.0f s)",
                 self.config.drain_timeout_s)
        with self._accepting:
            self._stopping = True
        self.link.stop_commands()  # the broker stops sending; what is already on its way is answered
        for item in self.commands.stop():  # queued commands are answered "shutting down"
            self._refuse_at_stop(*item)
        self.reloads.stop()  # a reload in progress completes
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join()
        if self.opcua is not None:  # every accepted trigger is answered by now: the last results are out
            self.opcua.stop()
        if self.link.connected:
            self.link.drain(self.config.drain_timeout_s)
        self.link.publish_now(self.topics.heartbeat, self.heartbeat())
        self.link.stop()
        if self.page is not None:
            self.page.stop()
        left = self.outbox.pending()
        self.outbox.close()
        for worker in self.workers.values():  # engines go while this thread, the only one left, holds the GIL
            worker.inspector.loaded = None
        gc.collect()
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
            loaded = load_bundle(new.bundle, new, self.trust) if engine_changed else worker.inspector.loaded
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
        log.info("SIGHUP: camera %s (re)started in %s mode", new.name, new.mode)
        replacement.start()


def checked_part_id(part_id: object) -> str:
    """A trigger's part id (cmd/inspect's or OPC UA's): a non-empty string (an integer is taken as its digits)."""
    if isinstance(part_id, int) and not isinstance(part_id, bool):
        part_id = str(part_id)
    if not isinstance(part_id, str) or not part_id.strip() or len(part_id) > MAX_PART_ID:
        raise CommandError(f"'part_id' must be a non-empty string of at most {MAX_PART_ID} characters, "
                           f"got {_short(part_id)}")
    if not _is_text(part_id):
        raise CommandError(f"'part_id' must be valid Unicode text (no lone surrogates), got {_short(part_id)}")
    return part_id


def command_digest_input(body: dict) -> bytes:
    """What a command's HMAC covers: the body without ``hmac``, as canonical JSON."""
    return json.dumps({k: v for k, v in body.items() if k != "hmac"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def _is_text(value: str) -> bool:
    """False for a string JSON can carry but UTF-8 cannot (a lone surrogate such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _answer_fields(body: dict | bytes) -> dict:
    """A command's ``part_id`` and ``camera`` as its answer names them, so a PLC can match every answer to its
    trigger (a payload that is not a JSON object has none)."""
    if isinstance(body, bytes):
        try:
            body = _parse_body(body)
        except CommandError:
            return {}
    fields = {}
    for key in ("part_id", "camera"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) <= MAX_PART_ID:
            fields[key] = str(value) if key == "part_id" else value
    return fields


def _parse_body(payload: bytes) -> dict:
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload is not JSON ({str(exc)[:120]})") from None
    except RecursionError:
        raise CommandError("payload is nested too deeply") from None
    if not isinstance(body, dict):
        raise CommandError(f"payload must be a JSON object, got {type(body).__name__}")
    return body


def _writable(folder: Path) -> str | None:
    """None if this user can create files in ``folder`` (made if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".edge-anomaly-check-"):
            pass
    except OSError as exc:
        return f"{folder}: not writable by this user ({exc.strerror or exc})"
    return None


def check(config: StationConfig) -> list[str]:
    """``serve --check``: every problem at once (secrets, TLS files, trust keys, every bundle with its hashes
    and signature, writable state folders), without binding or connecting. Returns the problems."""
    problems: list[str] = []

    def attempt(step: Callable[[], object]) -> object:
        try:
            return step()
        except Exception as exc:
            problems.append(str(exc))
            return None

    if config.mqtt.tls is not None:
        attempt(config.mqtt.tls.check_files)
    if config.http.tls is not None:
        attempt(config.http.tls.check_files)
    if config.opcua.enabled:
        from runtime.station.opcua.security import check_files

        attempt(lambda: check_files(config.opcua))
    trust = attempt(lambda: TrustList.load(config.trust)) if config.trust else None
    if config.trust and trust is None:
        problems.append("trust: keys unreadable, so no bundle can be checked against them")
    for folder in (config.outbox.path.parent, config.evidence.dir if config.evidence.save != "none" else None):
        problem = _writable(folder) if folder is not None else None
        if problem:
            problems.append(f"state: {problem} (set state_dir, outbox.path or evidence.dir)")
    if config.http.enabled:
        history = config.state_dir / HISTORY
        broken = corruption(history)
        if broken:
            print(f"history {history} is corrupt ({broken}): at start it is moved aside and a fresh one begun")
    for root in config.reload_roots:
        if not root.is_dir():
            problems.append(f"bundles_dir: {root} is not a folder")
    for camera in config.cameras:
        if config.trust and trust is None:
            continue
        loaded = attempt(lambda camera=camera: load_bundle(camera.bundle, camera, trust))
        if loaded is not None:
            signature = loaded.detector.bundle.manifest.signature
            signer = signature.key_id if trust and signature else None
            print(f"camera {camera.name}: {camera.mode}, bundle {loaded.info.name} ({loaded.info.hash[:12]}) verified"
                  + (f", signed by trusted key {signer}" if signer else ""))
    return problems


def serve(config_path: str | Path, check_only: bool = False) -> None:
    """``edge-anomaly serve``: run the station described by ``config_path`` until SIGTERM."""
    config = load_config(config_path)
    if check_only:
        problems = check(config)
        if problems:
            raise ConfigError(f"{config_path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
        print(f"config {config_path} is valid")
        return
    setup_logging(config.log.level, config.log.format)
    log.info("config %s loaded", config_path, extra={"config": config.model_dump(mode="json")})
    use_private_scratch(config.state_dir / SCRATCH)
    Station(Path(config_path), config).run()


def use_private_scratch(folder: Path) -> None:
    """Make ``folder`` this process's temporary folder (verified bundle copies, extracted tars), emptied first:
    what a station killed with -9 left there is removed at the next start instead of piling up in /tmp.
    Only this station uses its state folder, so nothing in it belongs to anyone else."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    tempfile.tempdir = str(folder)
