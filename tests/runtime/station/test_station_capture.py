"""A station whose camera is a video, running a bundle fitted on stills, says so once (heartbeat, log, page API).

A real mosquitto and ``edge-anomaly serve`` as a subprocess; the camera replays an MPEG-4 clip of good boards.
"""

from __future__ import annotations

import json

import pytest

from runtime.image_io import list_images, read_image
from tests.harness.station import Broker, DaemonProcess, Probe, fetch, page_port, station_config


def test_a_video_camera_on_a_stills_bundle_is_named_in_the_heartbeat_and_the_page(board_bundle, boards, tmp_path):
    pytest.importorskip("torch")
    from edge_anomaly.data.video import write_video

    frames = [read_image(p) for p in list_images(boards / "test" / "good")]
    video = write_video(tmp_path / "line.mp4", frames, 10.0)
    broker = Broker(tmp_path / "broker")
    broker.start()
    camera = {"name": "cam", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 20,
              "source": {"kind": "video", "path": str(video), "loop": True}}
    daemon = DaemonProcess(tmp_path / "station", station_config(broker.port, [camera],
                                                                http={"enabled": True, "port": 0})).start()
    probe = Probe(broker.port)
    try:
        beat = probe.wait_for("/heartbeat", lambda d: d["cameras"]["cam"]["capture_warning"], timeout=60)[0].data
        warning = beat["cameras"]["cam"]["capture_warning"]
        assert warning.startswith("cam: the model was fitted on still images (.png)") and "--data line.mp4" in warning
        code, _, body = fetch(f"http://127.0.0.1:{page_port(daemon)}/api/status")
        assert code == 200 and json.loads(body)["cameras"]["cam"]["capture_warning"] == warning
        assert sum("fitted on still images" in entry.get("msg", "") for entry in daemon.log_entries()) == 1
    finally:
        daemon.stop()
        probe.close()
        broker.stop()
