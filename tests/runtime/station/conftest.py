"""Fixtures for the daemon tests: a real mosquitto, the daemon as a subprocess, probe clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.station import Broker, DaemonProcess, Probe


@pytest.fixture
def broker_factory(tmp_path):
    brokers: list[Broker] = []

    def make(**options) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def probe_factory():
    probes: list[Probe] = []

    def make(port: int, **options) -> Probe:
        probes.append(Probe(port, **options))
        return probes[-1]

    yield make
    for probe in probes:
        probe.close()


@pytest.fixture
def daemon_factory():
    daemons: list[DaemonProcess] = []

    def make(folder: Path, config: dict, env: dict | None = None) -> DaemonProcess:
        daemons.append(DaemonProcess(folder, config, env))
        return daemons[-1]

    yield make
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill9()
