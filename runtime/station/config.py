"""``station.yaml``: one station's broker, outbox, evidence and cameras, validated in one place.

Secrets (broker password, TLS key password) are never written in the file: the config names
a file or an environment variable holding them, and only that name ever reaches a log.
Relative paths are taken relative to the config file, so a station folder can be moved whole.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from runtime.batching import BATCHING_MODES
from runtime.genicam import GenicamSettings
from runtime.image_io import MAX_PIXELS
from runtime.roi import Roi
from runtime.schema import StrictModel, read_yaml, validate
from runtime.sources import Backoff, redact

DEFAULT_STATE_DIR = Path("/var/lib/edge-anomaly")  # the unit's StateDirectory: writable, unlike /etc
TOPIC_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
SECRET_FIELDS = {"password", "key_password", "hmac_key", "token", "users"}


class ConfigError(ValueError):
    """A station config that cannot be used; the message names the file, field and value."""


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


def _topic_safe(value: str) -> str:
    if not TOPIC_SAFE.match(value):
        raise ValueError(f"{value!r} may only hold letters, digits, '_', '-' and '.' (it becomes an MQTT topic level)")
    return value


class _Section(StrictModel):
    # validate_default: defaults such as ``outbox.sqlite`` are also resolved against the config's folder
    model_config = ConfigDict(validate_default=True)


class SecretRef(_Section):
    """Where a secret lives: ``{file: path}`` or ``{env: NAME}``; the value is read when needed."""

    file: ConfigPath | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("name exactly one of 'file' or 'env'")
        return self

    def value(self) -> SecretStr:
        """The secret itself; a missing file or variable is an error naming it (never the value)."""
        if self.env is not None:
            if self.env not in os.environ:
                raise ConfigError(f"environment variable {self.env} (named as a secret) is not set")
            return SecretStr(os.environ[self.env])
        try:
            return SecretStr(self.file.read_text().rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"{self.file}: cannot read secret file ({exc.strerror or exc})") from None


def _no_inline_secret(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("inline secrets are refused (they end up in backups and logs): "
                         "write {file: /path/to/secret} or {env: VARIABLE_NAME}")
    return value


Secret = Annotated[SecretRef, BeforeValidator(_no_inline_secret)]


class TlsConfig(_Section):
    ca: ConfigPath | None = Field(None, description="CA bundle; the system's CAs when absent")
    cert: ConfigPath | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key: ConfigPath | None = Field(None, description="client key (PEM)")
    key_password: Secret | None = Field(None, description="password of an encrypted client key")
    insecure: bool = Field(False, description="skip the broker hostname check (test benches only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both 'cert' and 'key'")
        return self

    def check_files(self) -> None:
        """Checked when connecting rather than when parsing, so a config can be validated on another machine."""
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"mqtt.tls.{name}: {path} is not a file")


class MqttConfig(_Section):
    host: str = Field("localhost", description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT version")
    client_id: str | None = Field(None, description="default: edge-anomaly-<station>")
    keepalive_s: int = Field(30, ge=5, description="how fast the broker notices a dead daemon on a silent network")
    username: str | None = Field(None, description="broker user name")
    password: Secret | None = Field(None, description="broker password")
    tls: TlsConfig | None = Field(None, description="TLS to the broker (none: plain TCP)")
    reconnect: Backoff = Field(Backoff(min_s=1.0, max_s=30.0), description="reconnect back-off")
    connect_timeout_s: float = Field(10.0, gt=0, description="how long start-up waits for the broker")
    max_inflight: int = Field(20, ge=1, le=1000, description="QoS 1 messages awaiting PUBACK at once")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) else value


class OutboxConfig(_Section):
    path: ConfigPath | None = Field(None, description="default: <state_dir>/outbox.sqlite")
    max_results: int = Field(10000, ge=1, description="results kept while the broker is away; alerts are never dropped")


class EvidenceConfig(_Section):
    dir: ConfigPath | None = Field(None, description="default: <state_dir>/evidence")
    save: Literal["anomalous", "all", "none"] = Field("anomalous", description="which inspections keep an overlay "
                                                                            "and their raw frame")
    max_mb: float = Field(500.0, gt=0, description="oldest overlays are deleted beyond this size")
    jpeg_quality: int = Field(85, ge=10, le=100, description="the overlays' JPEG quality")


class ServerTlsConfig(_Section):
    """The page's own certificate: HTTPS instead of HTTP when set."""

    cert: ConfigPath = Field(description="server certificate chain (PEM)")
    key: ConfigPath = Field(description="server private key (PEM)")
    key_password: Secret | None = Field(None, description="password of an encrypted server key")

    def check_files(self) -> None:
        for name in ("cert", "key"):
            if not getattr(self, name).is_file():
                raise ConfigError(f"http.tls.{name}: {getattr(self, name)} is not a file")


class HistoryConfig(_Section):
    """The page's record of inspections and reviews (``<state_dir>/history.sqlite``), bounded both ways."""

    max_inspections: int = Field(200_000, ge=100, description="oldest unreviewed inspections go beyond this")
    max_days: float = Field(30.0, gt=0, description="unreviewed inspections older than this go")


class HttpConfig(_Section):
    """The operations port: /metrics, /healthz and the station's page (read-only without a login)."""

    enabled: bool = Field(True, description="serve the page, its API, /metrics and /healthz")
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(9108, ge=0, le=65535, description="port to bind")
    hosts: list[str] = Field(default_factory=list, description="host names the page answers to besides localhost "
                                                                "and IP addresses; any other Host is refused")
    tls: ServerTlsConfig | None = None
    token: Secret | None = Field(None, description="Bearer token that may review (and act) on the page")
    users: dict[str, Secret] = Field(default_factory=dict, description="user -> password (HTTP Basic) who may review")
    max_body_bytes: int = Field(4096, ge=256, le=1_048_576, description="larger request bodies are refused")
    live_fps: float = Field(2.0, gt=0, le=30, description="the page's live frame is encoded at most this often")
    history: HistoryConfig = Field(default_factory=dict)

    @property
    def secrets(self) -> list[SecretRef]:
        return [s for s in (self.token, self.tls.key_password if self.tls else None, *self.users.values()) if s]


class CommandsConfig(_Section):
    """Who may command the station, beyond what the broker's ACL already allows (docs/security.md).

    ``clients``: a command listed here is taken only from ``cmd/<name>/<client id>`` with a listed
    client id; the broker's ``pattern write <prefix>/+/cmd/+/%c`` ACL line makes that last level
    the publisher's own, authenticated client id. ``hmac_key``: the listed ``hmac_commands`` must carry
    ``"hmac"``, the hex HMAC-SHA256 of the payload's other fields (canonical JSON) with a ``"ts"`` within
    ``hmac_window_s`` of the station's clock.
    """

    clients: dict[str, list[str]] = Field(default_factory=dict, description="command -> allowed client ids")
    hmac_key: Secret | None = Field(None, description="shared secret the hmac_commands are signed with")
    hmac_commands: list[str] = Field(default_factory=lambda: ["reload"],
                                     description="commands that must carry an HMAC when hmac_key is set")
    hmac_window_s: float = Field(300.0, gt=0, description="how far a signed command's ts may be from the clock")
    max_bytes: int = Field(65536, ge=256, description="larger payloads are refused before parsing")


class OpcUaConfig(_Section):
    """The OPC UA server (OPC 40100-1 Machine Vision and a PLC handshake; docs/opcua.md): off unless enabled.

    Only ``Basic256Sha256`` sign-and-encrypt is offered, with the station's own certificate (``edge-anomaly
    opcua-certificate`` makes it at install); a client's certificate must lie in ``trusted_clients`` and it
    must sign in as one of ``users``: no anonymous session, so no anonymous read or write.
    """

    enabled: bool = Field(False, description="serve OPC UA beside MQTT")
    host: str = Field("127.0.0.1", description="address to bind: loopback unless a PLC on the line must reach it")
    port: int = Field(4840, ge=0, le=65535, description="port to bind")
    certificate: ConfigPath | None = Field(None, description="server certificate (DER); default "
                                                              "<state_dir>/opcua/server-cert.der")
    private_key: ConfigPath | None = Field(None, description="its key (PEM); default <state_dir>/opcua/server-key.pem")
    trusted_clients: ConfigPath | None = Field(None, description="folder of trusted client certificates (DER or "
                                                                  "PEM); default <state_dir>/opcua/trusted")
    users: dict[str, Secret] = Field(default_factory=dict, description="user -> password; at least one")
    max_sessions: int = Field(10, ge=1, le=1000, description="client sessions at once")
    max_subscriptions: int = Field(20, ge=1, le=10000, description="across all sessions")
    max_calls_per_s: float = Field(50.0, gt=0, description="method calls and handshake writes, per user")
    max_message_bytes: int = Field(1_048_576, ge=65536, le=64 * 1_048_576, description="larger requests are refused")
    results_kept: int = Field(1000, ge=1, le=100_000, description="per camera, for GetResultById / "
                                                                    "GetResultListFiltered")
    heartbeat_s: float = Field(1.0, gt=0, description="the handshake's Heartbeat counter ticks this often")

    @model_validator(mode="after")
    def _users_when_enabled(self) -> OpcUaConfig:
        if self.enabled and not self.users:
            raise ValueError("an enabled OPC UA server needs 'users' (no anonymous sessions are offered)")
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the lowest level logged")
    format: Literal["json", "text"] = Field("json", description="json: one object a line on stderr")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class SourceConfig(_Section):
    """Where a continuous or trigger camera gets frames."""

    kind: Literal["camera", "stream", "video", "images", "genicam"] = Field(description="what the frames come from")
    device: int | None = Field(None, description="camera: V4L2/DirectShow index")
    url: str | None = Field(None, description="stream: RTSP/HTTP URL")
    path: ConfigPath | None = Field(None, description="video: file; images: folder replayed in name order")
    loop: bool = Field(True, description="video/images: start again at the end")
    genicam: GenicamSettings | None = Field(None, description="genicam: a GigE Vision / USB3 Vision camera "
                                                              "through Aravis (runtime/genicam.py)")
    reopen: Backoff = Field(Backoff(min_s=0.5, max_s=30.0), description="back-off for reopening a failed source")

    @field_serializer("url")
    def _without_password(self, url: str | None) -> str | None:
        """Dumps (the start-up log line, for one) never carry a stream's password."""
        return redact(url) if url else url

    @model_validator(mode="after")
    def _needs(self) -> SourceConfig:
        needed = {"camera": "device", "stream": "url", "video": "path", "images": "path", "genicam": "genicam"}[
            self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"a {self.kind!r} source needs {needed!r}")
        return self


class WatchConfig(_Section):
    """Folder mode: new image files dropped into ``path`` (a camera's FTP drop)."""

    path: ConfigPath = Field(description="the folder watched")
    poll_s: float = Field(0.5, gt=0, description="how often the folder is listed")
    settle_s: float = Field(1.0, ge=0, description="a file is read once its size stayed the same this long")
    after: Literal["move", "delete"] = Field("move", description="move: into processed/ (failed/ if unreadable)")


class AlertConfig(_Section):
    thumbnail: bool = Field(True, description="attach a JPEG thumbnail of the worst region")
    thumbnail_px: int = Field(128, ge=16, le=1024, description="the thumbnail's size in pixels")
    jpeg_quality: int = Field(80, ge=10, le=100, description="the thumbnail's JPEG quality")
    max_regions: int = Field(5, ge=0, description="regions listed in an alert, largest first")


class DriftConfig(_Section):
    """The drift monitor (runtime.station.drift): frames compared, how often, and for how long a change must hold."""

    enabled: bool = Field(True, description="run the drift monitor")
    window: int = Field(120, ge=10, le=100_000, description="frames compared with the training reference")
    every: int = Field(10, ge=1, description="frames between comparisons")
    persist: int = Field(3, ge=1, description="comparisons in a row that start or clear a drift")


class BatchingConfig(_Section):
    mode: Literal[BATCHING_MODES] = Field(
        "auto", description="cameras that share a loaded bundle (same bundle, backend, device, threads, roi and "
                            "self_test). auto, from 2 such cameras: OpenVINO runs throughput streams and frames "
                            "that arrive together go through one engine call per stream (bench/cameras.py); off: "
                            "each camera calls the engine alone, latency hint. Each camera's results are those it "
                            "gets alone")
    max_wait_ms: float = Field(4.0, ge=0, le=1000, description="auto: how long a frame waits at most for the other "
                                                               "cameras' frames (a lone camera never waits)")


class CameraConfig(_Section):
    name: Annotated[str, AfterValidator(_topic_safe)] = Field(description="one topic level, unique")
    bundle: ConfigPath = Field(description="bundle folder or .tar")
    backend: str = Field("auto", description="the engine, passed to Detector.load")
    device: str | None = Field(None, description="the engine's device (CPU, GPU, NPU, CUDA, cuda:N)")
    threads: int | None = Field(None, ge=1, description="the engine's threads")
    self_test: Literal["refuse", "warn"] = Field(
        "refuse", description="when the bundle's self-test fails on this box: refuse it, or warn and report in status")
    mode: Literal["continuous", "trigger", "folder"] = Field(description="when a frame is inspected")
    source: SourceConfig | None = None
    watch: WatchConfig | None = None
    roi: Roi | None = Field(None, description="x, y, width, height in frame pixels")
    every_nth: int = Field(1, ge=1, description="continuous: inspect one frame in N")
    trigger_queue: int = Field(32, ge=1, le=10000, description="trigger: waiting triggers beyond this get 'busy'")
    max_image_pixels: int = Field(MAX_PIXELS, ge=1, description="folder: larger images (by header) are refused")
    rate_hz: float | None = Field(None, gt=0, description="continuous: at most this many inspections a second")
    alert: AlertConfig = Field(default_factory=dict, description="what an alert carries")
    drift: DriftConfig = Field(default_factory=dict)

    @model_validator(mode="after")
    def _mode_inputs(self) -> CameraConfig:
        if self.mode == "folder" and self.watch is None:
            raise ValueError("mode 'folder' needs 'watch: {path: ...}'")
        if self.mode != "folder" and self.source is None:
            raise ValueError(f"mode {self.mode!r} needs a 'source'")
        return self


class StationConfig(_Section):
    station: Annotated[str, AfterValidator(_topic_safe)] = Field(description="station name, one topic level")
    prefix: str = Field("edge-anomaly", description="topic prefix, may hold '/'")
    state_dir: ConfigPath = Field(DEFAULT_STATE_DIR, description="outbox and evidence unless set: must be writable")
    bundles_dir: ConfigPath | None = Field(None, description="cmd/reload takes bundles from here only "
                                                             "(default: the folders of the configured bundles)")
    trust: list[ConfigPath] | None = Field(None, description="public keys; when set, only bundles signed by one "
                                                             "of them are loaded; left out, unsigned bundles run")
    commands: CommandsConfig = Field(default_factory=dict)
    mqtt: MqttConfig = Field(default_factory=dict, description="the broker")
    outbox: OutboxConfig = Field(default_factory=dict, description="the SQLite outbox messages wait in until "
                                                                    "the broker acknowledged them")
    evidence: EvidenceConfig = Field(default_factory=dict, description="overlays and frames kept on disk")
    http: HttpConfig = Field(default_factory=dict)
    opcua: OpcUaConfig = Field(default_factory=dict)
    log: LogConfig = Field(default_factory=dict, description="the log on stderr")
    heartbeat_s: float = Field(10.0, gt=0, description="heartbeat interval")
    drain_timeout_s: float = Field(10.0, ge=0, description="SIGTERM: how long to wait for the outbox to empty")
    batching: BatchingConfig = Field(default_factory=dict, description="cameras that share one engine: whether "
                                                                      "their frames go through it together")
    cameras: list[CameraConfig] = Field(min_length=1, description="one entry per camera")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{value!r} must be a non-empty topic without wildcards or outer slashes")
        return value

    @field_validator("trust")
    @classmethod
    def _trust_names_keys(cls, value: list[Path] | None) -> list[Path] | None:
        if value is not None and not value:
            raise ValueError("an empty list would switch signature checks off: list the public keys bundles must be "
                             "signed with, or leave 'trust' out to allow unsigned bundles")
        return value

    @model_validator(mode="after")
    def _unique_cameras(self) -> StationConfig:
        names = [camera.name for camera in self.cameras]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(duplicated)}")
        return self

    @model_validator(mode="after")
    def _state_defaults(self) -> StationConfig:
        """Outbox and evidence default to the state folder (never to the read-only config folder)."""
        update = {}
        if self.outbox.path is None:
            update["outbox"] = self.outbox.model_copy(update={"path": self.state_dir / "outbox.sqlite"})
        if self.evidence.dir is None:
            update["evidence"] = self.evidence.model_copy(update={"dir": self.state_dir / "evidence"})
        return self.model_copy(update=update) if update else self

    @model_validator(mode="after")
    def _opcua_defaults(self) -> StationConfig:
        """The OPC UA server's certificate, key and trust list default to ``<state_dir>/opcua/``."""
        folder = self.state_dir / "opcua"
        defaults = {"certificate": folder / "server-cert.der", "private_key": folder / "server-key.pem",
                    "trusted_clients": folder / "trusted"}
        update = {name: path for name, path in defaults.items() if getattr(self.opcua, name) is None}
        return self.model_copy(update={"opcua": self.opcua.model_copy(update=update)}) if update else self

    @property
    def reload_roots(self) -> list[Path]:
        """Folders ``cmd/reload`` may take bundles from (symlinks resolved)."""
        if self.bundles_dir is not None:
            return [self.bundles_dir.resolve()]
        return sorted({camera.bundle.resolve().parent for camera in self.cameras})

    @property
    def drop_folders(self) -> list[Path]:
        """Watched folders: whoever writes there (a camera's FTP account) must never be able to name a bundle."""
        return [camera.watch.path.resolve() for camera in self.cameras if camera.watch is not None]

    def camera(self, name: str) -> CameraConfig:
        return next(camera for camera in self.cameras if camera.name == name)


def parse_config(data: object, source: str, base: Path | None = None) -> StationConfig:
    """Validate a mapping; every problem is reported by field path and value in one error."""
    config = validate(StationConfig, data, source, "station config", ConfigError, context={"base": base},
                      secret_fields=SECRET_FIELDS)
    for secret in (config.mqtt.password, config.mqtt.tls.key_password if config.mqtt.tls else None,
                   config.commands.hmac_key, *config.http.secrets, *config.opcua.users.values()):
        if secret is not None:
            secret.value()  # fail at start-up, not at the first reconnect
    return config


def load_config(path: str | Path) -> StationConfig:
    """Read and validate ``station.yaml``; raises :class:`ConfigError` naming the file and field."""
    path = Path(path)
    return parse_config(read_yaml(path, ConfigError), str(path), path.resolve().parent)
