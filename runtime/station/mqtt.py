"""The daemon's one MQTT connection: outbox delivery, status with last will, and incoming commands.

Delivery works like this. A sender thread publishes outbox rows in ``seq`` order at QoS 1 with
at most ``max_inflight`` awaiting their PUBACK; a row is deleted from the outbox only when its
PUBACK arrives (paho-mqtt's ``on_publish``). When the connection drops, paho keeps the unacknowledged
messages and retransmits them first thing after the reconnect; the sender publishes nothing new
until those are acknowledged, so the order on the wire stays the order of ``seq``. A daemon that
was killed starts again from the head of the outbox.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from runtime.station.config import MqttConfig
from runtime.station.messages import Topics, iso_time, offline_message
from runtime.station.outbox import Outbox

log = logging.getLogger(__name__)

_QUEUED = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # NO_CONN: paho sends it on reconnect
_WILL_REASON = "connection lost"


class BrokerRefused(ConnectionError):
    """The broker refused the daemon (credentials, identity, TLS): a configuration problem, not an outage."""


def _encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class MqttLink:
    def __init__(self, config: MqttConfig, topics: Topics, client_id: str, outbox: Outbox,
                 on_command: Callable[[str, str | None, bytes, bool], None], status: Callable[[], dict]) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self._on_command = on_command
        self._status = status
        self.connects = 0
        self.delivered = 0
        self.refused_messages = 0
        self._connected = threading.Event()
        self._answered = threading.Event()  # the first CONNACK (accepted or refused) arrived
        self._refusal: str | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq; touched by the sender thread only
        self._last_sent = 0
        self.sender_failures = 0
        self.sender_beat = time.monotonic()  # the supervisor reads it: a sender that stops beating is stalled
        self._sender = self._new_sender()
        self._client = self._make_client(client_id)

    def _make_client(self, client_id: str) -> mqtt.Client:
        config = self.config
        v5 = config.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_socket_open = _no_delay
        client.will_set(self.topics.status, _encode(offline_message(self.topics.station, _WILL_REASON, None)),
                        qos=1, retain=True)
        if config.username is not None:
            password = config.password.value().get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        if config.tls is not None:
            tls = config.tls
            tls.check_files()
            client.tls_set(ca_certs=str(tls.ca) if tls.ca else None, certfile=str(tls.cert) if tls.cert else None,
                           keyfile=str(tls.key) if tls.key else None,
                           keyfile_password=tls.key_password.value().get_secret_value() if tls.key_password else None)
            client.tls_insecure_set(tls.insecure)
        client.reconnect_delay_set(config.reconnect.min_s, config.reconnect.max_s)
        client.max_inflight_messages_set(config.max_inflight)
        return client

    def _new_sender(self) -> threading.Thread:
        return threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    @property
    def sender_alive(self) -> bool:
        return self._sender.is_alive()

    def restart_sender(self) -> None:
        """Called by the station's supervisor when the sender thread died or stalled."""
        if not self._stopping.is_set() and not self._sender.is_alive():
            self._sender = self._new_sender()
            self._sender.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start delivering; raises :class:`BrokerRefused` when the broker says no.

        An unreachable broker is not an error: inspection goes on and the outbox fills.
        """
        config = self.config
        where = f"{config.host}:{config.port}"
        extra = {"clean_start": True} if config.protocol == "5" else {}
        try:
            self._client.connect(config.host, config.port, config.keepalive_s, **extra)
        except ssl.SSLError as exc:
            raise BrokerRefused(f"TLS with the broker at {where} failed: {exc}") from None
        except OSError as exc:
            log.warning("broker %s not reachable (%s); inspecting anyway, messages wait in the outbox", where,
                        exc.strerror or exc, extra={"broker": where})
        self._client.loop_start()
        self._sender.start()
        if not self._answered.wait(config.connect_timeout_s):
            log.warning("no answer from the broker at %s within %.0f s; retrying in the background", where,
                        config.connect_timeout_s, extra={"broker": where})
        elif self._refusal is not None:
            self._client.loop_stop()
            self._stopping.set()
            hint = " (check mqtt.username and the password file or variable)" if "password" in self._refusal.lower() \
                or "authori" in self._refusal.lower() else ""
            raise BrokerRefused(f"the broker at {where} refused the connection: {self._refusal}{hint}")

    def drain(self, timeout: float) -> bool:
        """Wait until every outbox message is acknowledged (or ``timeout``); True if the outbox is empty."""
        deadline = time.monotonic() + timeout
        while self.outbox.pending() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.pending() == 0

    def stop_commands(self) -> None:
        """Unsubscribe from commands (at a stop): nothing new is accepted, nothing already sent is dropped."""
        if self.connected:
            self._client.unsubscribe(self.topics.commands)

    def stop(self) -> None:
        """Publish ``offline`` (retained), disconnect cleanly and stop the threads."""
        if self.connected:
            info = self._client.publish(self.topics.status,
                                        _encode(offline_message(self.topics.station, "shutdown", iso_time())),
                                        qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except RuntimeError as exc:
                log.warning("could not publish offline status: %s", exc)
        self._stopping.set()
        self._wake.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._sender.is_alive():
            self._sender.join(timeout=2.0)

    # -- publishing ---------------------------------------------------------------------------

    def notify(self) -> None:
        """The outbox has new rows."""
        self._wake.set()

    def publish_now(self, topic: str, message: dict, qos: int = 0, retain: bool = False) -> bool:
        """Publish outside the outbox (status, heartbeat, command errors): skipped while disconnected."""
        if not self.connected:
            return False
        return self._client.publish(topic, _encode(message), qos=qos, retain=retain).rc in _QUEUED

    def publish_status(self) -> None:
        self.publish_now(self.topics.status, self._status(), qos=1, retain=True)

    def _send_loop(self) -> None:
        """Deliver the outbox for as long as the station runs: a failure is logged, counted and retried
        after a back-off; it never ends delivery."""
        state = {"seen_connects": 0, "holding": False}
        failures = 0
        while not self._stopping.is_set():
            self.sender_beat = time.monotonic()
            try:
                self._send_step(state)
                failures = 0
            except Exception:
                failures += 1
                self.sender_failures += 1
                log.exception("outbox delivery failed (%d in a row); retrying", failures)
                self._stopping.wait(self.config.reconnect.delay(failures - 1))

    def _send_step(self, state: dict) -> None:
        self._wake.wait(0.5)
        self._wake.clear()
        self._collect_acks()
        if not self.connected:
            self.outbox.flush()  # held messages reach the disk even while the broker is away
            return
        if self.connects != state["seen_connects"]:
            # After a reconnect paho retransmits what was in flight: new rows wait for those acks.
            state["seen_connects"], state["holding"] = self.connects, bool(self._inflight)
        if state["holding"] and self._inflight:
            return
        state["holding"] = False
        room = self.config.max_inflight - len(self._inflight)
        if room > 0:
            self._publish_rows(room)

    def _publish_rows(self, room: int) -> None:
        rows = self.outbox.after(self._last_sent, room)
        for row in rows:
            info = self._client.publish(row.topic, row.payload, qos=row.qos)
            if info.rc not in _QUEUED:
                log.warning("publish of outbox seq %d failed (%s); retrying", row.seq, mqtt.error_string(info.rc))
                return
            self._inflight[info.mid] = row.seq
            self._last_sent = row.seq
        if len(rows) == room:
            self._wake.set()  # more may be waiting once acks arrive; they also wake us

    def _collect_acks(self) -> None:
        while True:
            try:
                mid, failure = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # a status, heartbeat or command error, not an outbox row
            if failure is not None:
                self.refused_messages += 1
                log.error("broker refused outbox message seq %d (%s); it is dropped", seq, failure,
                          extra={"seq": seq})
            else:
                self.delivered += 1
            self.outbox.remove(seq)

    # -- paho callbacks (network thread: keep them short) -------------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refusal = str(reason_code)
            log.error("broker refused the connection: %s", reason_code, extra={"broker": self.config.host})
            self._answered.set()
            return
        self._refusal = None
        self.connects += 1
        self._connected.set()
        log.info("connected to the broker at %s:%d (connection %d)", self.config.host, self.config.port,
                 self.connects)
        client.subscribe([(topic, 1) for topic in self.topics.commands])
        self.publish_status()
        self._answered.set()
        self._wake.set()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stopping.is_set():
            log.warning("lost the broker (%s); reconnecting with back-off, messages wait in the outbox", reason_code)

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put((mid, str(reason_code) if reason_code.is_failure else None))
        self._wake.set()

    def _handle_message(self, client, userdata, message) -> None:
        name, sender = self.topics.command_name(message.topic)
        if name == "error":
            return  # our own answers on cmd/error
        try:
            self._on_command(name, sender, message.payload, bool(message.retain))
        except Exception:
            log.exception("command %r failed", name[:40])


def _no_delay(client: mqtt.Client, userdata: object, sock) -> None:
    """Send small packets at once: with Nagle's algorithm a PUBACK followed by a result can wait ~40 ms for
    the peer's delayed ACK, which would dominate trigger-to-result latency."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
