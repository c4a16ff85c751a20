"""Two cameras of a station share one bundle, batched (auto): each gets the results it would get alone.

A real mosquitto and ``edge-anomaly serve`` as a subprocess; both cameras replay the same folder of boards.
"""

from __future__ import annotations

import pytest

from runtime.detector import Detector
from runtime.image_io import list_images, read_image
from tests.harness.station import Broker, DaemonProcess, Probe, copy_images, station_config


def test_two_cameras_batched_on_one_engine_score_as_alone(board_bundle, boards, tmp_path):
    images = copy_images(list_images(boards / "test" / "good")[:2] + list_images(boards / "test" / "scratch")[:2],
                         tmp_path / "frames")
    expected = {str(path): result.score for path, result
                in zip(images, Detector.load(board_bundle[0]).predict([read_image(p) for p in images]), strict=True)}
    broker = Broker(tmp_path / "broker")
    broker.start()
    cameras = [{"name": name, "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 10,
                "source": {"kind": "images", "path": str(tmp_path / "frames"), "loop": True}} for name in ("a", "b")]
    config = station_config(broker.port, cameras, batching={"mode": "auto", "max_wait_ms": 50})
    daemon = DaemonProcess(tmp_path / "station", config).start()
    probe = Probe(broker.port)
    try:
        results = {name: probe.wait_for(f"/{name}/result", count=8, timeout=120) for name in ("a", "b")}
        for name, received in results.items():
            sources = {message.data["source"] for message in received}
            assert len(sources) == 4, name  # every frame of the folder came through
            for message in received:
                assert message.data["score"] == pytest.approx(expected[message.data["source"]], rel=1e-5), name
        assert any("2 cameras share the onnxruntime engine" in entry.get("msg", "") for entry in daemon.log_entries())
    finally:
        daemon.stop()
        probe.close()
        broker.stop()


def test_the_batching_switch_is_checked_and_named():
    from runtime.station.config import ConfigError, parse_config

    camera = {"name": "cam1", "bundle": "b.tar", "mode": "trigger", "source": {"kind": "camera", "device": 0}}
    assert parse_config({"station": "s", "cameras": [camera]}, "station.yaml").batching.mode == "auto"
    with pytest.raises(ConfigError, match=r"batching.mode: Input should be 'auto' or 'off'"):
        parse_config({"station": "s", "cameras": [camera], "batching": {"mode": "always"}}, "station.yaml")
    with pytest.raises(ConfigError, match=r"batching.max_wait_ms: Input should be less than or equal to 1000"):
        parse_config({"station": "s", "cameras": [camera], "batching": {"max_wait_ms": 5000}}, "station.yaml")
