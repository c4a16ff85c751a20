"""The station process: wires config, outbox, MQTT, cameras, evidence, metrics and signals together.

Start-up fails fast on what an operator must fix (bad config, a bundle failing its hash check,
credentials the broker refuses) and tolerates what fixes itself (a broker or camera that is
not there yet). SIGTERM drains: cameras finish the frame in hand, the outbox is given
``drain_timeout_s`` to empty, ``offline`` is published, and whatever is left waits on disk for
the next start. SIGHUP re-reads the config and applies camera changes in place.
"""

from __future__ import annotations

import gc
import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from runtime.signing import TrustList
from runtime.station.cameras import Cameras, batched
from runtime.station.config import ConfigError, StationConfig, load_config
from runtime.station.dispatch import Dispatcher
from runtime.station.evidence import EvidenceStore
from runtime.station.history import HISTORY, corruption
from runtime.station.inspection import InspectionOutputs, load_groups
from runtime.station.logs import setup_logging
from runtime.station.messages import Topics, heartbeat_camera, heartbeat_message, status_camera, status_message
from runtime.station.mqtt import MqttLink
from runtime.station.outbox import Outbox
from runtime.station.publisher import Publisher
from runtime.station.stats import StationStats
from runtime.station.view import CameraView
from runtime.station.web import StationPage

log = logging.getLogger(__name__)

# Settings that belong to the process, not to a camera: SIGHUP reports them, a restart applies them.
RESTART_ONLY = ("station", "prefix", "mqtt", "outbox", "evidence", "http", "state_dir", "trust", "commands",
                "bundles_dir", "opcua", "batching")
SCRATCH = "tmp"  # under state_dir: the station's own temporary folder
STALL_S = 60.0  # the MQTT sender showing no sign of life this long is reported stalled


class Station:
    """The wiring and the life cycle: what goes out (``publisher``), the cameras (``cameras``), the commands
    (``dispatcher``, fed by MQTT and OPC UA), the page and the OPC UA server (both read the station through
    :class:`~runtime.station.view.StationView`, which this class implements)."""

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
        self.trust = TrustList.load(config.trust) if config.trust else None
        self.publisher = Publisher(config.station, self.topics, self.outbox, self.stats)
        self.cameras = Cameras(config.cameras, self.trust, InspectionOutputs(
            self.publisher, self.stats, self.evidence, config.evidence.save), config.batching)
        self.dispatcher = Dispatcher(lambda: self.config, self.cameras, self.publisher)
        self.page = StationPage(self, self.publisher) if config.http.enabled else None  # binds its port here
        if self.page is not None:
            self.publisher.inspection_observers.append(self.page.observe)
        self.opcua = None
        if config.opcua.enabled:  # asyncua is an optional extra: imported only when the server is wanted
            from runtime.station.opcua.server import OpcUaServer

            self.opcua = OpcUaServer(config.opcua, self, self.dispatcher)
            self.publisher.inspection_observers.append(lambda inspection, _frame: self.opcua.observe(inspection))
            self.publisher.trigger_error_observers.append(self.opcua.trigger_failed)
        self.publisher.answer_unanswered_triggers()
        self.link = MqttLink(config.mqtt, self.topics, config.mqtt.client_id or f"edge-anomaly-{config.station}",
                             self.outbox, self.dispatcher.receive, self.status)
        self.publisher.attach(self.link)

    # -- what the station tells the world (the StationView the page and the OPC UA server read) -------

    @property
    def registry(self) -> CollectorRegistry:
        return self.stats.registry

    def camera_views(self) -> dict[str, CameraView]:
        return self.cameras.views()

    def page_url(self) -> str | None:
        if self.page is None:
            return None
        return f"{self.page.server.scheme}://{self.config.http.host}:{self.page.server.port}"

    def status(self) -> dict:
        workers = dict(self.cameras.workers)  # one snapshot: a SIGHUP may add or remove cameras meanwhile
        batching = batched(workers)
        cameras = {name: status_camera(worker.config.mode, worker.state, worker.error, worker.inspector.loaded.info,
                                       worker.inspector.drift_state, worker.inspector.capture_warning, batching[name])
                   for name, worker in workers.items()}
        return status_message(self.config.station, cameras, self.started)

    def heartbeat(self) -> dict:
        cameras = {name: heartbeat_camera(worker.state, self.stats.summary(name), worker.inspector.drift_state,
                                          worker.inspector.capture_warning)
                   for name, worker in self.cameras.workers.items()}
        link = self.link
        return heartbeat_message(
            self.config.station, self.started, cameras, command_errors=self.stats.command_errors,
            outbox_pending=self.outbox.pending(), dropped_results=self.outbox.dropped_results,
            mqtt_connected=link.connected, mqtt_connections=link.connects, mqtt_delivered=link.delivered,
            mqtt_inflight=link.inflight, evidence_bytes=self.evidence.total_bytes if self.evidence else 0)

    def problems(self) -> list[str]:
        """Everything that keeps the station from doing its job right now; empty when healthy."""
        stopping = self.dispatcher.stopping
        problems = self.cameras.problems(stopping)
        if not self.link.sender_alive:
            problems.append("mqtt sender thread is dead: nothing is delivered")
        elif (silent := time.monotonic() - self.link.sender_beat) > STALL_S:
            problems.append(f"mqtt sender stalled (no progress for {silent:.0f} s)")
        problems += self.dispatcher.problems()
        if self.opcua is not None and not self.opcua.alive and not stopping:
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
                              "cameras": {name: worker.state for name, worker in self.cameras.workers.items()}}

    def supervise(self) -> None:
        """Restart what died (the sender, a camera loop, the command threads); /healthz said why meanwhile."""
        if self.dispatcher.stopping:
            return
        if not self.link.sender_alive:
            log.error("mqtt sender thread died; restarting it")
            self.link.restart_sender()
        self.cameras.supervise()
        self.dispatcher.supervise()

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
        self.dispatcher.start()
        self.link.start()
        if self.page is not None:
            self.page.start()
        if self.opcua is not None:
            self.opcua.start()  # a port taken or a certificate missing stops the station here
        self.cameras.start()
        log.info("station %s serving %d camera(s)", self.config.station, len(self.cameras.workers),
                 extra={"station": self.config.station, "cameras": list(self.cameras.workers)})
        next_beat = time.monotonic()
        while not self._stop_requested:
            if time.monotonic() >= next_beat:
                self.publisher.heartbeat(self.heartbeat())
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
        self.dispatcher.close()
        self.link.stop_commands()  # the broker stops sending; what is already on its way is answered
        self.dispatcher.stop()  # queued commands are answered "shutting down"; a reload in progress completes
        self.cameras.stop()
        if self.opcua is not None:  # every accepted trigger is answered by now: the last results are out
            self.opcua.stop()
        if self.link.connected:
            self.link.drain(self.config.drain_timeout_s)
        self.publisher.heartbeat(self.heartbeat())
        self.link.stop()
        if self.page is not None:
            self.page.stop()
        left = self.outbox.pending()
        self.outbox.close()
        self.cameras.release()  # engines go while this thread, the only one left, holds the GIL
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
        self.cameras.apply(old.cameras, new.cameras)
        log.info("SIGHUP: config %s applied", self.config_path)
        self.publisher.status_changed()


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
    groups = [] if config.trust and trust is None else load_groups(config.cameras, trust, config.batching)
    for group, loaded in groups:  # as the start loads them: one engine per group of one bundle and engine settings
        if isinstance(loaded, Exception):
            problems.append(f"camera {', '.join(camera.name for camera in group)}: {loaded}")
            continue
        signature = loaded.signature
        signer = signature.key_id if trust and signature else None
        for camera in group:
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
