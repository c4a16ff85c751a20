"""Debian's GigE Vision simulator (``arv-fake-gv-camera-0.8``, package aravis-tools) on 127.0.0.1, for the GenICam
tests and bench/genicam.py: a real GVCP/GVSP stream that can be killed and started again with the same serial."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

BINARY = "arv-fake-gv-camera-0.8"


def aravis_or_skip():
    """Aravis through PyGObject, or skip saying what to install (CI installs both: .ci/run)."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        pytest.skip(f"Aravis is not installed (apt-get install gir1.2-aravis-0.8; pip install 'PyGObject<3.51'): {exc}")
    if shutil.which(BINARY) is None:
        pytest.skip(f"{BINARY} is not installed (apt-get install aravis-tools)")
    return Aravis


class FakeCamera:
    """One simulated camera with its own serial number, so tests never pick another camera by chance.

    ``lost_per_thousand``: GVSP packets the camera drops at random (``--gvsp-lost-ratio``, per thousand packets;
    1000 drops them all). It does not offer packet resend (Aravis sets its stream's ``packet-resend`` to never),
    so a frame with a lost packet reaches Aravis incomplete (buffer status ``timeout`` or ``missing-packets``)."""

    def __init__(self, lost_per_thousand: float = 0.0) -> None:
        self.serial = f"EA{uuid.uuid4().hex[:6].upper()}"
        self.lost_per_thousand = lost_per_thousand
        self.process: subprocess.Popen | None = None

    def start(self) -> FakeCamera:
        self.process = subprocess.Popen([BINARY, "-i", "127.0.0.1", "-s", self.serial,
                                         "-r", str(self.lost_per_thousand)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Aravis = aravis_or_skip()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            Aravis.update_device_list()
            if any(Aravis.get_device_serial_nbr(i) == self.serial for i in range(Aravis.get_n_devices())):
                return self
            time.sleep(0.1)
        raise AssertionError(f"the fake camera {self.serial} did not appear within 10 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
