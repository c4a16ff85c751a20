"""OPC UA side of the station tests (and bench/daemon.py): certificates, an encrypted asyncua client, event capture.

The station's own certificate is made the way an install makes it (``edge-anomaly opcua-certificate``); client
certificates are made with asyncua's generator and trusted by copying them into the station's trust folder.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

asyncua = pytest.importorskip("asyncua")
from asyncua import Client, ua  # noqa: E402
from asyncua.crypto.cert_gen import setup_self_signed_certificate  # noqa: E402
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from tests.harness.station import patience  # noqa: E402

MV = "http://opcfoundation.org/UA/MachineVision"
CLIENT_URI = "urn:edge-anomaly:test-plc"


def make_station_certificate(config_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "edge_anomaly", "opcua-certificate", "--config", str(config_path)],
                   check=True, capture_output=True)


def make_client_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}-cert.der", folder / f"{name}-key.pem"
    asyncio.run(setup_self_signed_certificate(key, cert, CLIENT_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                              {"commonName": name}))
    return cert, key


def trust(cert: Path, trusted: Path) -> None:
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cert, trusted / cert.name)


async def connect(endpoint: str, server_cert: Path, cert: Path | None, key: Path | None, user: str | None,
                  password: str | None, secure: bool = True) -> Client:
    """An asyncua client, connected (Basic256Sha256 SignAndEncrypt unless ``secure`` is off) with the station's
    data types loaded; the caller disconnects it. Its request timeout scales with the load (:func:`patience`):
    a fixed 10 s failed connections at load 14-21 ("client is disconnected")."""
    client = Client(endpoint, timeout=patience(10))
    client.application_uri = CLIENT_URI
    if secure:
        await client.set_security(SecurityPolicyBasic256Sha256, certificate=str(cert), private_key=str(key),
                                  server_certificate=str(server_cert), mode=ua.MessageSecurityMode.SignAndEncrypt)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    await client.connect()
    try:
        # asyncua skips a data type whose name it already knows: OPC UA 1.05 has its own TrimmedString, so a client
        # maps the Machine Vision one (i=3017) to it before loading the structures (a quirk of asyncua's client)
        ua.register_basetype("TrimmedString", ua.NodeId(3017, await client.get_namespace_index(MV)), ua.TrimmedString)
        await client.load_data_type_definitions()
    except Exception:
        await client.disconnect()
        raise
    return client


class Events:
    """Collects the events of one subscription, in arrival order."""

    def __init__(self) -> None:
        self.received: list = []
        self.at: dict[int, float] = {}  # id(event) -> time.perf_counter() at arrival (events are frozen objects)
        self.arrived = asyncio.Event()

    def event_notification(self, event) -> None:
        self.at[id(event)] = time.perf_counter()
        self.received.append(event)
        self.arrived.set()

    def status_change_notification(self, status) -> None:
        pass

    async def wait_for(self, predicate, timeout: float = 20.0):
        timeout = patience(timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.received:
                if predicate(event):
                    return event
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout} s; got {len(self.received)} event(s)")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass


class Station:
    """The nodes a test uses on one camera's VisionSystem, found by browse name as a generic client would."""

    def __init__(self, client: Client, mv: int, system) -> None:
        self.client, self.mv, self.system = client, mv, system

    @classmethod
    async def find(cls, client: Client, camera: str) -> Station:
        mv = await client.get_namespace_index(MV)
        for child in await client.nodes.objects.get_children():
            if (await child.read_browse_name()).Name == camera:
                return cls(client, mv, child)
        raise AssertionError(f"no object {camera!r} under Objects")

    async def child(self, *path: str):
        return await self.system.get_child([name if ":" in name else f"{self.mv}:{name}" for name in path])

    async def automatic(self):
        return await self.child("VisionStateMachine", "AutomaticModeStateMachine")

    async def handshake(self, name: str):
        system_ns = self.system.nodeid.NamespaceIndex
        return await self.system.get_child([f"{system_ns}:Handshake", f"{system_ns}:{name}"])

    async def start_single_job(self, part_id: str, recipe: str | None = None):
        automatic = await self.automatic()
        return await automatic.call_method(
            f"{self.mv}:StartSingleJob", ua.MeasIdDataType(Id=""), ua.PartIdDataType(Id=part_id),
            ua.RecipeIdExternalDataType(Id=recipe or ""), ua.ProductIdDataType(Id=""),
            ua.Variant([], ua.VariantType.ExtensionObject))

    async def subscribe_results(self) -> Events:
        events = Events()
        subscription = await self.client.create_subscription(20, events)
        await subscription.subscribe_events(self.system, ua.NodeId(1024, self.mv))
        return events


async def wait_async(read, predicate, timeout: float = 10.0):
    """The first value ``await read()`` gives that satisfies ``predicate``, polled every 50 ms; ``timeout`` is for
    a quiet machine (:func:`patience`)."""
    deadline = asyncio.get_running_loop().time() + patience(timeout)
    while True:
        value = await read()
        if predicate(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        await asyncio.sleep(0.05)
