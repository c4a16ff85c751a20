"""Drift on the wire: a station replaying a folder whose frames darken publishes ``<camera>/drift``.

A real mosquitto and ``edge-anomaly serve`` as a subprocess. The camera replays 40 good boards the
model never saw, then the same boards under a lamp that dims step by step, then starts again
from the bright ones; the drift window is shortened (20 frames) so the test takes seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.global_stats import LIGHTING_STATS
from runtime.image_io import list_images, read_image, write_image
from tests.harness.station import Broker, DaemonProcess, Probe, station_config

pytestmark = pytest.mark.slow  # the station as a subprocess, a real broker: not in -m "not slow"


@pytest.fixture
def darkening_folder(tmp_path):
    pytest.importorskip("torch")
    from edge_anomaly.data.synthetic import generate_boards

    boards = generate_boards(tmp_path / "boards", n_train=40, n_test_good=0, n_per_defect=0, size=(320, 256), seed=5)
    frames = [read_image(p) for p in list_images(boards / "train" / "good")]
    folder = tmp_path / "replay"
    folder.mkdir()
    gains = [1.0] * len(frames) + list(np.linspace(1.0, 0.55, len(frames)))
    for index, gain in enumerate(gains):
        frame = np.clip(frames[index % len(frames)].astype(np.float32) * gain, 0, 255).astype(np.uint8)
        write_image(folder / f"{index:03d}.png", frame)
    return folder


def test_a_darkening_line_publishes_one_drift_event_naming_the_lighting(board_bundle, darkening_folder, tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    camera = {"name": "cam", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 25,
              "source": {"kind": "images", "path": str(darkening_folder)},
              "drift": {"window": 20, "every": 5, "persist": 2}}
    daemon = DaemonProcess(tmp_path / "station", station_config(broker.port, [camera])).start()
    probe = Probe(broker.port)
    try:
        status = probe.wait_for("/status", lambda d: d["state"] == "online")[0].data
        assert status["cameras"]["cam"]["drift"]["state"] == "ok"
        assert status["cameras"]["cam"]["drift"]["reference"] == "bundle"  # the exporter wrote one
        onset = probe.wait_for("/cam/drift", timeout=60)[0]
        assert onset.topic == "plant/line1/cam/drift"
        assert onset.data["state"] == "drift" and onset.data["statistic"] in LIGHTING_STATS
        assert onset.data["camera"] == "cam" and onset.data["since"].endswith("Z")
        beat = probe.wait_for("/heartbeat", lambda d: d["cameras"]["cam"]["drift"]["state"] == "drift")[0].data
        assert beat["cameras"]["cam"]["drift"]["since"] == onset.data["since"]
        # the replay starts again with the bright boards: the drift clears, once
        cleared = probe.wait_for("/cam/drift", lambda d: d["state"] == "ok", timeout=60)[0]
        assert cleared.data["statistic"] is None
        events = [m.data["state"] for m in probe.on("/cam/drift") if m.at <= cleared.at]
        assert events == ["drift", "ok"]  # once per onset and clear, no flapping
    finally:
        daemon.stop()
        probe.close()
        broker.stop()
