"""The station's OPC UA server: asyncua on its own thread and event loop, beside the MQTT link.

It is one more way into the station, not a second hub: triggers and recipes go through the station's own
trigger and reload paths (the ones ``cmd/inspect`` and ``cmd/reload`` use), and every inspection the station
makes, however it was triggered, is reported as a ResultReady event. The broker being away changes nothing
here. :meth:`start` fails (and so the station's start) when the port is taken or the certificate is missing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.internal_session import InternalSession

from runtime.station.config import OpcUaConfig
from runtime.station.opcua.address_space import define_types
from runtime.station.opcua.security import StationRules, StationUsers, application_uri, check_files
from runtime.station.opcua.vision_system import VisionSystems

if TYPE_CHECKING:
    from runtime.station.dispatch import Dispatcher
    from runtime.station.messages import Inspection
    from runtime.station.view import StationView

log = logging.getLogger(__name__)
logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO lines (one per request) would flood the station log
START_TIMEOUT_S = 60.0
HEALTH_EVERY_S = 1.0


class OpcUaServer:
    def __init__(self, config: OpcUaConfig, station: StationView, commands: Dispatcher) -> None:
        check_files(config)
        self.config = config
        self.station = station
        self.commands = commands
        self.endpoint = f"opc.tcp://{config.host}:{config.port}"
        self._users = StationUsers(config)  # secrets read now: a missing one fails the start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._systems: VisionSystems | None = None
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)

    @property
    def alive(self) -> bool:
        """False once the server's thread has ended (not before it started: the page may answer /healthz first)."""
        return self._thread.ident is None or self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"OPC UA server on {self.endpoint} did not start within {START_TIMEOUT_S:.0f} s")
        if self._failure is not None:
            raise RuntimeError(f"OPC UA server on {self.endpoint} cannot start: {self._failure}") from self._failure

    def stop(self) -> None:
        """Deliver what is queued, close the sessions, end the thread."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
            self._thread.join(timeout=30)

    # -- from the station's threads -----------------------------------------------------------

    def observe(self, inspection: Inspection) -> None:
        self._post(("inspection", inspection))

    def trigger_failed(self, row: int | None, camera: str, error: str) -> None:
        self._post(("failed", row, camera, error))

    def _post(self, item: tuple) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop closed meanwhile (the station stops)
                pass

    # -- the server's own thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001  (reported to start(), or logged once running)
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("OPC UA server failed")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        server = await self._make_server()
        async with server:
            self._ready.set()
            log.info("OPC UA server on %s (Basic256Sha256 SignAndEncrypt, %d user(s), %d camera(s))",
                     self.endpoint, len(self.config.users), len(self._systems.systems),
                     extra={"opcua_endpoint": self.endpoint})
            background = [asyncio.create_task(self._follow_health()), asyncio.create_task(self._heartbeat())]
            try:
                await self._deliver()
            finally:
                for task in background:
                    task.cancel()
        log.info("OPC UA server stopped")

    async def _make_server(self) -> Server:
        config = self.config
        server = Server(user_manager=self._users)
        server.limits.max_message_size = config.max_message_bytes
        server.limits.max_chunk_count = config.max_message_bytes // server.limits.max_recv_buffer + 1
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"edge-anomaly station {self.station.config.station}")
        await server.set_application_uri(application_uri(self.station.config.station))
        rules = StationRules(config.max_calls_per_s, config.max_subscriptions,
                             lambda: len(server.iserver.subscription_service.subscriptions))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=rules)
        server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(config.certificate))
        await server.load_private_key(str(config.private_key))
        trust = TrustStore([config.trusted_clients], [])
        await trust.load()
        self._users.trust = trust
        server.set_certificate_validator(CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, trust))
        server.iserver.max_connections = config.max_sessions
        InternalSession.max_connections = config.max_sessions  # activated sessions, for this process's one server
        ns = await define_types(server)
        ns.own = await server.register_namespace(f"urn:edge-anomaly:{self.station.config.station}:cameras")
        self._systems = VisionSystems(server, ns, self.station, self.commands, config.results_kept,
                                      self.station.page_url)
        for name, camera in self.station.camera_views().items():
            await self._systems.add(name, continuous=camera.mode != "trigger")
        return server

    async def _deliver(self) -> None:
        """What the station reported, in its order, until stop() queues None."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                if item[0] == "inspection":
                    await self._systems.on_inspection(item[1])
                else:
                    await self._systems.on_trigger_failed(*item[1:])
            except Exception:
                log.exception("OPC UA: reporting %s failed", item[0])

    async def _follow_health(self) -> None:
        while True:
            try:
                problems = await asyncio.get_running_loop().run_in_executor(None, self.station.problems)
                await self._systems.follow_health(problems)
            except Exception:
                log.exception("OPC UA: reading the station's health failed")
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _heartbeat(self) -> None:
        count = 0
        while True:
            await self._systems.heartbeat(count)
            count += 1
            await asyncio.sleep(self.config.heartbeat_s)
