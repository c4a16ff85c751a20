"""After a reload every camera has what the start would give it: the drift history of a bundle it keeps, a lone
camera's engine when the cameras it shared one with moved off it; and ``serve --check`` loads as the start does.

The station is built in process from its station.yaml (nothing connects: the reloads are the calls cmd/reload,
PrepareRecipe and SIGHUP end in), with real bundles and engines.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.batching import BatchingBackend
from runtime.detector import Detector
from runtime.image_io import list_images, read_image
from runtime.station.config import load_config
from runtime.station.inspection import Shot
from runtime.station.service import Station, check
from tests.harness.station import free_port, station_config


def _camera(name: str, bundle: Path, frames: Path, **settings) -> dict:
    return {"name": name, "bundle": str(bundle), "mode": "trigger",
            "source": {"kind": "images", "path": str(frames), "loop": True}, **settings}


def _config(tmp_path: Path, cameras: list[dict]) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(json.dumps(station_config(free_port(), cameras, state_dir=str(tmp_path / "state"),
                                              batching={"mode": "auto", "max_wait_ms": 20})))
    return path


@pytest.fixture
def make_station():
    stations: list[Station] = []

    def make(config_path: Path) -> Station:
        stations.append(Station(config_path, load_config(config_path)))
        stations[-1].cameras.start()
        return stations[-1]

    yield make
    for station in stations:
        station.cameras.stop()
        station.outbox.close()
        station.cameras.release()


FRESH_DRIFT = {"state": "ok", "reference": "bundle", "statistic": None, "value": None, "since": None, "moved": {}}


def _copies(source: Path, folder: Path, *names: str) -> list[Path]:
    for name in names:
        shutil.copytree(source, folder / name)
    return [folder / name for name in names]


def test_a_camera_joining_a_reload_of_its_own_bundle_keeps_its_drift_and_capture_check(board_bundle, boards,
                                                                                      tmp_path, make_station):
    same, renamed = _copies(board_bundle[0], tmp_path / "bundles", "boards", "boards-v2")
    manifest = json.loads((renamed / "manifest.json").read_text())
    (renamed / "manifest.json").write_text(json.dumps({**manifest, "name": "boards-v2"}))  # another bundle hash
    drift = {"window": 10, "every": 1, "persist": 1}
    config = _config(tmp_path, [_camera(name, same, boards / "test" / "good", drift=drift) for name in "ab"])
    station = make_station(config)
    b = station.cameras.workers["b"].inspector
    dark = [(read_image(path).astype(np.float32) * 0.5).astype(np.uint8)
            for path in list_images(boards / "test" / "good")]
    for index in range(12):  # under a dimmed lamp: the window fills and the drift starts
        b.inspect(Shot(dark[index % len(dark)], f"dark-{index}", time.time(), time.perf_counter()))
    drifting = station.status()["cameras"]["b"]["drift"]
    assert drifting["state"] == "drift" and drifting["since"] is not None
    assert b.capture_check.sources["b"].compared

    running = b.loaded
    assert station.cameras.reload_bundles(["a"], None) == {"a": None}  # b runs that bundle: it joins the reload
    assert b.loaded is not running and b.loaded is station.cameras.workers["a"].inspector.loaded
    assert b.loaded.info.hash == running.info.hash
    assert station.status()["cameras"]["b"]["drift"] == drifting  # same window, same onset
    assert b.capture_check.sources["b"].compared

    assert station.cameras.reload_bundles(["b"], renamed) == {"b": None}  # another bundle: its own reference
    assert b.loaded.info.hash != running.info.hash
    assert station.status()["cameras"]["b"]["drift"] == FRESH_DRIFT
    assert b.capture_check.sources == {}

    for index in range(12):  # drifting again on the renamed bundle, then SIGHUP moves b's region of the frame
        b.inspect(Shot(dark[index % len(dark)], f"dark-{index}", time.time(), time.perf_counter()))
    assert station.status()["cameras"]["b"]["drift"]["state"] == "drift"
    settings = json.loads(config.read_text())
    settings["cameras"][1] = {**settings["cameras"][1], "bundle": str(renamed), "roi": [16, 16, 256, 224]}
    config.write_text(json.dumps(settings))
    station.apply_config()
    b = station.cameras.workers["b"].inspector
    assert b.loaded.info.hash != running.info.hash and b.loaded.detector.roi == (16, 16, 256, 224)
    assert station.status()["cameras"]["b"]["drift"] == FRESH_DRIFT  # the same bundle on another region
    assert b.capture_check.sources == {}


def _engine(station: Station, camera: str):
    return station.cameras.workers[camera].inspector.loaded.detector.backend


def _hint(engine) -> str:
    inner = engine.inner if isinstance(engine, BatchingBackend) else engine
    return str(inner.compiled.get_property("PERFORMANCE_HINT"))


def test_a_camera_left_alone_on_a_shared_engine_gets_a_lone_cameras_engine(board_exports, boards, tmp_path,
                                                                          make_station):
    shared, other = _copies(board_exports("openvino"), tmp_path / "bundles", "boards", "boards-other")
    frames = boards / "test" / "good"
    config = _config(tmp_path, [_camera(name, shared, frames) for name in "ab"])
    station = make_station(config)
    assert _engine(station, "a") is _engine(station, "b")
    assert isinstance(_engine(station, "b"), BatchingBackend) and _hint(_engine(station, "b")) == "THROUGHPUT"

    assert station.cameras.reload_bundles(["a"], other) == {"a": None}  # b is left alone on the shared bundle
    cameras = station.status()["cameras"]
    for name in "ab":
        assert not cameras[name]["batching"], name
        assert not isinstance(_engine(station, name), BatchingBackend), name
        assert _hint(_engine(station, name)) == "LATENCY", name
    assert cameras["b"]["bundle"]["path"] == str(shared)

    # back on one engine, then SIGHUP removes b: a is left alone
    assert station.cameras.reload_bundles(["a"], shared) == {"a": None}
    assert _engine(station, "a") is _engine(station, "b") and station.status()["cameras"]["a"]["batching"]
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "cameras": settings["cameras"][:1]}))
    station.apply_config()
    assert list(station.status()["cameras"]) == ["a"] and not station.status()["cameras"]["a"]["batching"]
    assert not isinstance(_engine(station, "a"), BatchingBackend) and _hint(_engine(station, "a")) == "LATENCY"


def test_check_loads_a_bundle_two_cameras_share_once_and_lists_every_refusal(board_bundle, boards, tmp_path,
                                                                            monkeypatch):
    shared, tampered = _copies(board_bundle[0], tmp_path / "bundles", "boards", "tampered")
    (tampered / "model.onnx").write_bytes(b"not the model")
    frames = boards / "test" / "good"
    loads: list[Path] = []
    real_load = Detector.load.__func__

    def counted(cls, bundle, *args, **kwargs):
        loads.append(Path(bundle))
        return real_load(cls, bundle, *args, **kwargs)

    monkeypatch.setattr(Detector, "load", classmethod(counted))
    config = load_config(_config(tmp_path, [_camera("a", shared, frames), _camera("b", shared, frames)]))
    assert check(config) == []
    assert loads == [shared]  # one engine for both, as the start builds it

    loads.clear()
    config = load_config(_config(tmp_path, [_camera(name, bundle, frames) for name, bundle in
                                            (("a", shared), ("b", tampered), ("c", shared), ("d", tampered))]))
    problems = check(config)
    assert loads == [shared, tampered]
    assert len(problems) == 1 and problems[0].startswith("camera b, d: ") and "model.onnx" in problems[0], problems
