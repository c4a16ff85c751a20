"""Who may act on the page: a Bearer token or HTTP Basic users from the station's secrets; reading needs nothing.

Secrets are read once at start-up and compared in constant time; they never reach a log or an answer.
A credential that fails ``MAX_FAILURES`` times from one address within ``LOCKOUT_S`` is refused from
there for that long, so a password cannot be guessed at line speed. What is locked is the credential
tried (the token, or one user name) at that address, never the address as a whole: behind an SSH
tunnel or a proxy every client is 127.0.0.1, and a request without credentials (a page not yet
signed in) is no failed login at all. Requests that change something must also come from the
page itself: a browser's cross-site ``Origin`` (or ``Sec-Fetch-Site``) is refused, and the body must
be JSON, which no plain HTML form can send.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from pydantic import SecretStr

from runtime.station.config import HttpConfig

MAX_FAILURES = 10
LOCKOUT_S = 60.0
TOKEN_REVIEWER = "token"
MAX_TRACKED = 10_000  # (address, credential) pairs remembered


class Access:
    def __init__(self, token: SecretStr | None, users: dict[str, SecretStr]) -> None:
        self._token = token.get_secret_value().encode() if token else None
        self._users = {name.encode(): secret.get_secret_value().encode() for name, secret in users.items()}
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: HttpConfig) -> Access:
        return cls(config.token.value() if config.token else None,
                   {name: secret.value() for name, secret in config.users.items()})

    @property
    def enabled(self) -> bool:
        return self._token is not None or bool(self._users)

    @property
    def methods(self) -> list[str]:
        return (["token"] if self._token is not None else []) + (["password"] if self._users else [])

    @staticmethod
    def claimed(authorization: str | None) -> str | None:
        """Which credential a request tries (``token`` or ``user <name>``), None when it carries none usable."""
        scheme, _, credentials = (authorization or "").partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and credentials:
            return TOKEN_REVIEWER
        if scheme == "basic":
            try:
                user = base64.b64decode(credentials, validate=True).partition(b":")[0]
            except (binascii.Error, ValueError):
                return None
            return "user " + user[:64].decode("utf-8", "replace")
        return None

    def locked_out(self, client: str, authorization: str | None) -> bool:
        """True while the credential this request tries has failed ``MAX_FAILURES`` times from ``client``."""
        claimed = self.claimed(authorization)
        if claimed is None:
            return False
        with self._lock:
            failures = self._failures.get((client, claimed))
            if not failures:
                return False
            while failures and time.monotonic() - failures[0] > LOCKOUT_S:
                failures.popleft()
            return len(failures) >= MAX_FAILURES

    def identify(self, authorization: str | None, client: str) -> str | None:
        """The reviewer's name (the Basic user, or ``token``), or None; a wrong credential is counted against
        itself at ``client`` (a request with none is not counted)."""
        who = self._check(authorization or "")
        claimed = self.claimed(authorization)
        if who is None and claimed is not None:
            with self._lock:
                if len(self._failures) > MAX_TRACKED:  # bounded however many names are tried
                    self._failures.clear()
                self._failures.setdefault((client, claimed), deque(maxlen=MAX_FAILURES)).append(time.monotonic())
        return who

    def _check(self, authorization: str) -> str | None:
        scheme, _, credentials = authorization.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and self._token is not None:
            return TOKEN_REVIEWER if hmac.compare_digest(credentials.encode(), self._token) else None
        if scheme != "basic" or not self._users:
            return None
        try:
            user, _, password = base64.b64decode(credentials, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        known = self._users.get(user)
        # compared even for an unknown user, so the answer's timing does not say which users exist
        matches = hmac.compare_digest(password, known if known is not None else b"\0" * 32)
        return user.decode("utf-8", "replace") if known is not None and matches else None


def cross_site(headers: dict[str, str] | object, host: str | None) -> str | None:
    """Why a state-changing request is refused as cross-site, or None when it comes from the page itself."""
    site = headers.get("sec-fetch-site")
    if site not in (None, "same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != host):
        return f"Origin {origin[:100]!r} is not this station ({host})"
    return None


def known_host(host: str, names: list[str]) -> bool:
    """True when a request's Host header names this station: ``localhost``, an IP literal (a DNS-rebinding page
    can only send its own domain name) or one of ``names`` (``http.hosts``), with or without a port."""
    name = host.strip().lower()
    if name.startswith("["):  # [IPv6]:port
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name in (n.lower().rstrip(".") for n in names):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
