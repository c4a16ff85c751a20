"""The fault suite's fixtures: the station harness (real mosquitto, the station as a real subprocess), signing
keys, and a ``bundles_dir`` holding the board bundle signed by the station's trusted key."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.station import Broker, DaemonProcess, Probe


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """{"ours": (private, public, id), "theirs": (...)}: the station trusts ours only."""
    from runtime.signing import new_key_pair

    root = tmp_path_factory.mktemp("keys")
    return {who: new_key_pair(root / who) for who in ("ours", "theirs")}


@pytest.fixture(scope="session")
def signed_bundles(board_bundle, keys, tmp_path_factory) -> Path:
    """A bundles_dir with ``boards`` (folder) and ``boards.tar``, both signed with our key."""
    from runtime.signing import load_private_key, sign_bundle

    root = tmp_path_factory.mktemp("bundles-dir")
    folder = shutil.copytree(board_bundle[0], root / "boards")
    shutil.copyfile(board_bundle[1], root / "boards.tar")
    sign_bundle(folder, load_private_key(keys["ours"][0]))
    return root


@pytest.fixture
def stations(tmp_path):
    """``stations(config, name)`` -> started DaemonProcess; all are killed at the end."""
    made: list[DaemonProcess] = []

    def start(config: dict, name: str = "station", env: dict | None = None) -> DaemonProcess:
        made.append(DaemonProcess(tmp_path / name, config, env).start())
        return made[-1]

    yield start
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill9()


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def probe(broker):
    probe = Probe(broker.port)
    yield probe
    probe.close()


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` -> a fresh tmpfs of that size (``"3m"``) to fill; needs root and mount(8), else the test is
    skipped. Unmounted at the end."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs-{len(mounts)}"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:
            pytest.skip("needs root and mount(8) for a small tmpfs")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
