"""Two cameras of a station share one bundle, batched (auto): each gets the results it would get alone.

A real mosquitto and ``edge-anomaly serve`` as a subprocess; both cameras replay the same folder of boards.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from runtime.detector import Detector
from runtime.image_io import list_images, read_image
from tests.harness.station import Broker, DaemonProcess, Probe, copy_images, station_config, wait_until


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


def _logged(daemon: DaemonProcess, text: str) -> list[str]:
    return [entry["msg"] for entry in daemon.log_entries() if text in entry.get("msg", "")]


def _after(probe: Probe, daemon: DaemonProcess, act, swaps: int) -> dict:
    """Do ``act`` (a reload), wait for its ``swaps`` bundle swaps, and return the cameras of the status it published."""
    statuses, swapped = len(probe.on("/status")), len(_logged(daemon, "now runs bundle"))
    act()
    wait_until(lambda: len(_logged(daemon, "now runs bundle")) >= swapped + swaps, 60, f"{swaps} bundle swap(s)")
    return probe.wait_for("/status", count=statuses + 1, timeout=30)[-1].data["cameras"]


def test_after_a_reload_cameras_of_one_bundle_share_one_batched_engine_again(board_bundle, boards, tmp_path):
    """cmd/reload (every camera, or one whose bundle another camera runs) and SIGHUP build the detectors as the
    start does: one engine per shared bundle, batched, and the status says so."""
    frames = copy_images(list_images(boards / "test" / "good")[:1] + list_images(boards / "test" / "scratch")[:1],
                         tmp_path / "frames")
    bundles = tmp_path / "bundles"
    for name in ("boards", "boards-copy"):
        shutil.copytree(board_bundle[0], bundles / name)

    def camera(name: str) -> dict:
        return {"name": name, "bundle": str(bundles / "boards"), "mode": "trigger",
                "source": {"kind": "images", "path": str(tmp_path / "frames"), "loop": True}}

    broker = Broker(tmp_path / "broker")
    broker.start()
    config = station_config(broker.port, [camera("a"), camera("b")], bundles_dir=str(bundles),
                            batching={"mode": "auto", "max_wait_ms": 50})
    daemon = DaemonProcess(tmp_path / "station", config).start()
    probe = Probe(broker.port)
    try:
        start = probe.wait_for("/status", lambda d: d["state"] == "online" and all(
            c["state"] == "ok" for c in d["cameras"].values()), timeout=120)[-1].data["cameras"]
        assert _logged(daemon, "cameras share the") == _logged(daemon, "2 cameras share the onnxruntime engine")
        assert len(_logged(daemon, "cameras share the")) == 1
        assert start["a"]["batching"] and start["b"]["batching"]

        cameras = _after(probe, daemon, lambda: probe.publish("cmd/reload", {}), swaps=2)
        assert len(_logged(daemon, "2 cameras share the onnxruntime engine")) == 2  # one engine built, batched
        assert cameras["a"]["batching"] and cameras["b"]["batching"]

        # one camera named: the other runs the same bundle, so both move onto one new engine
        cameras = _after(probe, daemon, lambda: probe.publish("cmd/reload", {"camera": "a"}), swaps=2)
        assert len(_logged(daemon, "2 cameras share the onnxruntime engine")) == 3
        assert cameras["a"]["batching"] and cameras["b"]["batching"]

        # another bundle for one camera: each runs its own, unbatched; then the other joins it
        cameras = _after(probe, daemon, lambda: probe.publish("cmd/reload", {"camera": "a", "bundle": "boards-copy"}),
                         swaps=1)
        assert len(_logged(daemon, "cameras share the")) == 3
        assert not cameras["a"]["batching"] and not cameras["b"]["batching"]
        cameras = _after(probe, daemon, lambda: probe.publish("cmd/reload", {"camera": "b", "bundle": "boards-copy"}),
                         swaps=2)
        assert len(_logged(daemon, "2 cameras share the onnxruntime engine")) == 4
        assert cameras["a"]["batching"] and cameras["b"]["batching"]
        assert cameras["a"]["bundle"]["path"] == cameras["b"]["bundle"]["path"] == str(bundles / "boards-copy")

        # SIGHUP adds a camera on the bundle the others run (their configured one, reloaded): one engine for three
        _after(probe, daemon, lambda: probe.publish("cmd/reload", {}), swaps=2)
        daemon.write_config({**config, "cameras": [camera("a"), camera("b"), camera("c")]})
        _after(probe, daemon, lambda: daemon.send(signal.SIGHUP), swaps=2)
        wait_until(lambda: probe.on("/status")[-1].data["cameras"].get("c", {}).get("state") == "ok", 30, "camera c")
        cameras = probe.on("/status")[-1].data["cameras"]
        assert len(_logged(daemon, "3 cameras share the onnxruntime engine")) == 1
        assert all(cameras[name]["batching"] for name in "abc")

        expected = dict(zip((str(p) for p in frames), (r.score for r in Detector.load(board_bundle[0]).predict(
            [read_image(p) for p in frames])), strict=True))
        probe.publish("cmd/inspect", {"part_id": "shared"})
        for name in "abc":
            result = probe.wait_for(f"/{name}/result", lambda d: d["part_id"] == "shared", timeout=60)[0].data
            assert result["score"] == pytest.approx(expected[result["source"]], rel=1e-5), name
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
