"""Bundles exported through ``edge-anomaly export --device``, made once per session (INT8 exports are slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from device_helpers import run_cli


@pytest.fixture(scope="session")
def device_export(board_model, tmp_path_factory):
    """``device_export(profile, *flags)`` -> (bundle folder, manifest), exported by the CLI once per arguments."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    root = tmp_path_factory.mktemp("device-bundles")
    made: dict = {}

    def export(profile: str, *flags: str) -> tuple[Path, dict]:
        key = (profile, *flags)
        if key not in made:
            out = root / "-".join(key).replace("--", "")
            code, output = run_cli("export", str(board_model[0]), "--device", profile, *flags, "--out", str(out))
            assert code == 0, output
            made[key] = out, json.loads((out / "manifest.json").read_text())
        return made[key]

    return export


@pytest.fixture
def mqtt(tmp_path):
    """(a real mosquitto on a free port, ``probe()``: a new client subscribed to the station's topics)."""
    from tests.harness.station import Broker, Probe

    broker, probes = Broker(tmp_path / "broker"), []
    broker.start()
    yield broker, lambda: probes.append(Probe(broker.port)) or probes[-1]
    for probe in probes:
        probe.close()
    broker.stop()
