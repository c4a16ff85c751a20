"""Who may talk to the station's OPC UA server, and how much: certificates, users, sessions, subscriptions, calls.

The server offers one endpoint, ``Basic256Sha256`` sign-and-encrypt, with the station's own certificate; a client's
certificate must be in the trust folder (else ``BadCertificateUntrusted`` when it creates its session), and it must
activate the session as one of the configured users (no anonymous token is offered). Every signed-in user may read,
browse, subscribe and call; only the handshake's PLC variables are writable. Calls and writes are rate-limited per
user (``BadTooManyOperations``) and subscriptions are capped across sessions (``BadTooManySubscriptions``).
"""

from __future__ import annotations

import hmac
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from asyncua import ua
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from runtime.station.config import ConfigError, OpcUaConfig

_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
_WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
_CREATE_SUBSCRIPTION = ua.NodeId(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)
_ALLOWED = {ua.NodeId(type_id) for type_id in USER_TYPES}


def application_uri(station: str) -> str:
    """The server's ApplicationUri: its certificate's subjectAltName must name it."""
    return f"urn:edge-anomaly:{station}"


class StationUsers(UserManager):
    """The configured users and passwords (read from the station's secrets once, at start), on a secured channel.

    asyncua lets a client open a channel without security (for GetEndpoints) and would let it create and activate
    a session there: so a user is accepted only when the secure channel carries a client certificate that is in the
    trust list (``certificate`` is the channel's peer certificate, empty on an unsecured channel).
    """

    def __init__(self, config: OpcUaConfig) -> None:
        self._passwords = {name: secret.value().get_secret_value().encode() for name, secret in config.users.items()}
        self.trust: TrustStore | None = None  # set once loaded

    def get_user(self, iserver, username: str | None = None, password: str | None = None,
                 certificate=None) -> User | None:
        if not certificate or self.trust is None or not self.trust.is_trusted(
                x509.load_der_x509_certificate(certificate)):
            return None  # asyncua answers BadUserAccessDenied
        expected = self._passwords.get(username or "")
        given = (password or "").encode() if isinstance(password, str) else (password or b"")
        if expected is None or not hmac.compare_digest(expected, given):
            return None
        return User(role=UserRole.User, name=username)


class StationRules(PermissionRuleset):
    """Signed-in users may do what asyncua's ``User`` role may (never add or delete nodes), at a bounded rate."""

    def __init__(self, max_calls_per_s: float, max_subscriptions: int, subscriptions: Callable[[], int]) -> None:
        self.max_calls_per_s = max_calls_per_s
        self.max_subscriptions = max_subscriptions
        self._subscriptions = subscriptions
        self._recent: dict[str, deque[float]] = {}

    def check_validity(self, user: User, action_type_id: ua.NodeId, body) -> bool:
        if user.role != UserRole.User or action_type_id not in _ALLOWED:
            return False
        if action_type_id in (_CALL, _WRITE):
            recent = self._recent.setdefault(user.name or "", deque())
            now = time.monotonic()
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if len(recent) >= self.max_calls_per_s:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
            recent.append(now)
        if action_type_id == _CREATE_SUBSCRIPTION and self._subscriptions() >= self.max_subscriptions:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManySubscriptions)
        return True


def check_files(config: OpcUaConfig) -> None:
    """The certificate, its key and the trust folder must be there (``edge-anomaly opcua-certificate`` makes them)."""
    for what, path in (("certificate", config.certificate), ("private_key", config.private_key)):
        if not path.is_file():
            raise ConfigError(f"opcua.{what}: {path} is not a file (make the station's certificate with "
                              "`edge-anomaly opcua-certificate --config station.yaml`)")
    if not config.trusted_clients.is_dir():
        raise ConfigError(f"opcua.trusted_clients: {config.trusted_clients} is not a folder (put the certificates "
                          "of the PLCs and MES clients allowed to connect there)")


async def make_certificate(config: OpcUaConfig, station: str) -> tuple[Path, Path]:
    """The station's own RSA key and self-signed certificate (valid one year, for its ApplicationUri and this
    host's name), made once; an existing pair is kept. The trust folder is created empty."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    for folder in (config.certificate.parent, config.private_key.parent, config.trusted_clients):
        folder.mkdir(parents=True, exist_ok=True)
    await setup_self_signed_certificate(config.private_key, config.certificate, application_uri(station),
                                        socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH],
                                        {"commonName": f"edge-anomaly {station}", "organizationName": "edge-anomaly"})
    config.private_key.chmod(0o600)
    return config.certificate, config.private_key


def describe_certificate(path: Path) -> str:
    """The certificate's subject and SHA-1 thumbprint, as a controls engineer compares them in the PLC's trust list."""
    data = path.read_bytes()
    certificate = (x509.load_pem_x509_certificate(data) if data.startswith(b"-----")
                   else x509.load_der_x509_certificate(data))
    thumbprint = certificate.fingerprint(hashes.SHA1())
    return f"{certificate.subject.rfc4514_string()}, SHA-1 thumbprint {thumbprint.hex()}"
