"""The station's commands, whichever way they arrive: MQTT's ``cmd/<name>`` (the network thread only queues them,
it never blocks) and the OPC UA server's methods and PLC handshake (``submit_trigger``, ``reload_camera``).

One handler per command (``HANDLERS``: its names are the commands there are), one authorisation
(client ids, the HMAC over canonical JSON and its replay window), one way to answer a refusal (``cmd/error``,
naming the part and camera), and one door that closes at a stop: a command is taken before it, or answered
"shutting down".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.station.publisher import Publisher
from runtime.station.workers import SHUTTING_DOWN, CameraWorker, Trigger

if TYPE_CHECKING:
    from runtime.station.cameras import Cameras
    from runtime.station.config import StationConfig

log = logging.getLogger(__name__)

MAX_PART_ID = 128

HANDLERS: dict[str, Callable[[Dispatcher, dict], None]] = {}  # command name -> its handler, filled by @handles


def handles(name: str) -> Callable:
    """Register a Dispatcher method as the handler of ``cmd/<name>``: it gets the parsed, authorised body and
    raises CommandError to refuse."""
    def register(method: Callable[[Dispatcher, dict], None]) -> Callable[[Dispatcher, dict], None]:
        HANDLERS[name] = method
        return method
    return register


class CommandError(ValueError):
    """A command that cannot be carried out; answered on ``cmd/error``."""


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

    def restarted(self) -> QueueWorker:
        """A fresh thread for the same job, started (this one died)."""
        fresh = QueueWorker(self.name, self._handle, self._queue.maxsize)
        fresh.start()
        return fresh

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


class Dispatcher:
    def __init__(self, config: Callable[[], StationConfig], cameras: Cameras, publisher: Publisher) -> None:
        self._config = config  # the running config: SIGHUP may change the cameras and their drop folders
        self.cameras = cameras
        self.publisher = publisher
        self.stopping = False  # set at SIGTERM: new commands are answered "shutting down"
        self._accepting = threading.Lock()
        self.commands = QueueWorker("commands", self._run, 1000)
        self.reloads = QueueWorker("reload", cameras.reload_bundles, 16)

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.commands.start()
        self.reloads.start()

    def close(self) -> None:
        """From now on every command is answered "shutting down" (one taken before is still carried out)."""
        with self._accepting:
            self.stopping = True

    def stop(self) -> None:
        """After the MQTT link stopped taking commands: queued ones are answered "shutting down", a reload in
        progress completes."""
        for item in self.commands.stop():
            self._run(*item)  # stopping makes it an answer, never an action
        self.reloads.stop()

    def problems(self) -> list[str]:
        return [f"{worker.name} thread is dead: commands are not served" for worker in (self.commands, self.reloads)
                if not worker.alive and not self.stopping]

    def supervise(self) -> None:
        """Restart a command or reload thread that died; /healthz said why meanwhile."""
        if not self.commands.alive:
            log.error("commands thread died; restarting it")
            self.commands = self.commands.restarted()
        if not self.reloads.alive:
            log.error("reloads thread died; restarting it")
            self.reloads = self.reloads.restarted()

    # -- MQTT ---------------------------------------------------------------------------------------

    def receive(self, name: str, sender: str | None, payload: bytes, retained: bool = False) -> None:
        """A command from the broker (``sender``: the client id of ``cmd/<name>/<client id>``), queued."""
        limit = self._config().commands.max_bytes
        if len(payload) > limit:  # refused before parsing, and not queued
            self.publisher.command_error(name, f"payload of {len(payload)} bytes exceeds the limit of {limit}",
                                         payload)
            return
        if retained:  # the broker replays a retained command at every connect: it is never acted on
            self.publisher.command_error(
                name, f"retained message on cmd/{name[:40]} ignored: commands are taken only when published live "
                "(clear it: publish an empty retained message on that topic)", payload, **_answer_fields(payload))
            return
        with self._accepting:  # a command is queued before the stop, or refused after it: never lost between
            if not self.stopping:
                if not self.commands.put(name, sender, payload):
                    self.publisher.command_error(name, "busy: too many commands waiting", payload,
                                                 **_answer_fields(payload))
                return
        self._run(name, sender, payload)  # stopping makes it an answer, never an action

    def _run(self, name: str, sender: str | None, payload: bytes) -> None:
        body: dict = {}
        try:
            body = _parse_body(payload)
            self._authorise(name, sender, body)
            if self.stopping:
                raise CommandError(f"station is {SHUTTING_DOWN}")
            handler = HANDLERS.get(name)
            if handler is None:
                raise CommandError(f"unknown command {name[:40]!r} (known: {', '.join(HANDLERS)})")
            handler(self, body)
        except CommandError as exc:
            self.publisher.command_error(name, str(exc), payload, **_answer_fields(body))
        except Exception as exc:  # a bug: answered all the same, with no traceback on the wire
            log.exception("command %s failed", name[:40])
            self.publisher.command_error(name, f"internal error ({type(exc).__name__}); see the station log",
                                         payload, **_answer_fields(body))

    def _authorise(self, name: str, sender: str | None, body: dict) -> None:
        rules = self._config().commands
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

    # -- the handlers ---------------------------------------------------------------------------------

    @handles("inspect")
    def _inspect(self, body: dict) -> None:
        """cmd/inspect: a trigger for the named trigger camera, or for every one."""
        part_id = checked_part_id(body.get("part_id"))
        for worker in self._target_cameras(body, mode="trigger"):
            self._accept_trigger(worker, part_id)

    @handles("reload")
    def _reload(self, body: dict) -> None:
        """cmd/reload: the named camera's (or every camera's) bundle loaded again, or the one named, queued."""
        bundle = body.get("bundle")
        if bundle is not None and not isinstance(bundle, str):
            raise CommandError(f"'bundle' must be a path, got {_short(bundle)}")
        workers = self._target_cameras(body)
        if bundle is not None and len(workers) > 1:
            raise CommandError("this station has several cameras: name the 'camera' whose bundle to replace")
        path = self._allowed_bundle(bundle) if bundle is not None else None
        if not self.reloads.put([w.name for w in workers], path):
            raise CommandError("busy: reloads are already queued")

    # -- OPC UA ---------------------------------------------------------------------------------------

    def submit_trigger(self, camera: str, part_id: object) -> int:
        """A trigger from the OPC UA server (a method or the PLC handshake), with cmd/inspect's rules and guarantees;
        returns the trigger's outbox row, which its result (``Inspection.trigger``) or error names."""
        part_id = checked_part_id(part_id)
        with self._accepting:
            if self.stopping:
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
            self.publisher.command_error("reload", str(exc), camera=camera)
            raise
        return self.cameras.reload_bundles([worker.name], path)[worker.name]

    # -- shared by the handlers -------------------------------------------------------------------------

    def _target_cameras(self, body: dict, mode: str | None = None) -> list[CameraWorker]:
        camera = body.get("camera")
        workers = self.cameras.workers
        if camera is not None and not isinstance(camera, str):
            raise CommandError(f"'camera' must be a camera name, got {type(camera).__name__}")
        if camera is not None:
            if camera not in workers:
                raise CommandError(f"unknown camera {_short(camera)} (cameras: {', '.join(workers)})")
            worker = workers[camera]
            if mode is not None and worker.config.mode != mode:
                raise CommandError(f"camera {camera!r} runs in {worker.config.mode!r} mode, not {mode!r}")
            return [worker]
        chosen = [w for w in workers.values() if mode is None or w.config.mode == mode]
        if not chosen:
            raise CommandError(f"no camera of this station runs in {mode!r} mode")
        return chosen

    def _accept_trigger(self, worker: CameraWorker, part_id: str) -> int:
        """Record the trigger in the outbox, then queue it; from here on it is answered, by a result or an error."""
        row = self.publisher.accept_trigger(worker.name, part_id)
        if not worker.trigger(Trigger(part_id, time.time(), time.perf_counter(), row)):
            self.publisher.trigger_error(part_id, row, worker.name, f"busy: camera {worker.name} already has "
                                         f"{worker.waiting} trigger(s) waiting; this one is not inspected")
        return row

    def _allowed_bundle(self, bundle: str) -> Path:
        """The bundle path, once it resolves (symlinks followed) inside ``bundles_dir`` and outside every
        watched drop folder: whoever can publish a command cannot make the station load a file they dropped."""
        config = self._config()
        roots = config.reload_roots
        path = Path(bundle) if Path(bundle).is_absolute() else roots[0] / bundle
        resolved = path.resolve()
        for drop in config.drop_folders:
            if resolved == drop or drop in resolved.parents:
                raise CommandError(f"bundle {_short(bundle)} lies in the watched drop folder {drop}: refused")
        if not any(root in resolved.parents for root in roots):
            raise CommandError(f"bundle {_short(bundle)} is outside bundles_dir "
                               f"({', '.join(str(root) for root in roots)}): refused")
        return resolved


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


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of something a client sent, cut short: error answers never echo a payload whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


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
