"""The daemon's parts on their own: config and secrets, the outbox, evidence rotation, the folder watcher."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pydantic")

from runtime.sources import SourceError  # noqa: E402
from runtime.station.config import ConfigError, SourceConfig, WatchConfig, load_config, parse_config  # noqa: E402
from runtime.station.evidence import EvidenceStore  # noqa: E402
from runtime.station.logs import JsonFormatter  # noqa: E402
from runtime.station.outbox import ALERT, RESULT, Outbox  # noqa: E402
from runtime.station.watch import FolderWatcher  # noqa: E402
from runtime.station.workers import open_source  # noqa: E402

CAMERA = {"name": "cam1", "bundle": "bundles/b.tar", "mode": "trigger", "source": {"kind": "camera", "device": 0}}


def _config(**overrides) -> dict:
    return {"station": "line1", "cameras": [CAMERA], **overrides}


def test_example_station_yaml_is_valid(monkeypatch):
    monkeypatch.setenv("MQTT_PASSWORD", "s3cret")
    config = load_config(Path(__file__).resolve().parents[3] / "devices" / "station.yaml")
    assert config.mqtt.password.value().get_secret_value() == "s3cret"
    assert {camera.mode for camera in config.cameras} == {"continuous", "trigger", "folder"}


def test_relative_paths_follow_the_config_file_and_defaults_are_filled(tmp_path):
    (tmp_path / "station.yaml").write_text(json.dumps(_config()))
    config = load_config(tmp_path / "station.yaml")
    assert config.cameras[0].bundle == tmp_path / "bundles" / "b.tar"
    assert config.outbox.path == Path("/var/lib/edge-anomaly/outbox.sqlite")  # state: never under /etc
    assert config.evidence.dir == Path("/var/lib/edge-anomaly/evidence")
    (tmp_path / "station.yaml").write_text(json.dumps({**_config(), "state_dir": "state"}))
    moved = load_config(tmp_path / "station.yaml")
    assert moved.outbox.path == tmp_path / "state" / "outbox.sqlite"
    assert moved.evidence.dir == tmp_path / "state" / "evidence"
    assert config.mqtt.protocol == "5" and config.heartbeat_s == 10


@pytest.mark.parametrize(("change", "expected"), [
    ({"station": "line/1"}, "station: Value error, 'line/1' may only hold"),
    ({"mqtt": {"port": 70000}}, "mqtt.port: Input should be less than or equal to 65535 (got 70000)"),
    ({"mqtt": {"protocol": 4}}, "mqtt.protocol: Input should be '3.1.1' or '5'"),
    ({"mqtt": {"hots": "x"}}, "mqtt.hots: Extra inputs are not permitted"),
    ({"cameras": [{**CAMERA, "mode": "folder"}]}, "cameras.0: Value error, mode 'folder' needs 'watch"),
    ({"cameras": [{**CAMERA, "source": {"kind": "stream"}}]}, "a 'stream' source needs 'url'"),
    ({"cameras": [CAMERA, CAMERA]}, "camera names must be unique, repeated: cam1"),
    ({"cameras": [{**CAMERA, "roi": [0, 0, 0, 10]}]}, "roi [0, 0, 0, 10] must be"),
])
def test_bad_config_names_the_field_and_value(change, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(**change), "station.yaml")
    assert "station.yaml: invalid station config" in str(caught.value)
    assert expected in str(caught.value)


def test_secrets_come_from_file_or_env_never_inline(tmp_path, monkeypatch, caplog):
    (tmp_path / "pass").write_text("from-file\n")
    config = parse_config(_config(mqtt={"username": "u", "password": {"file": "pass"}}), "s.yaml", tmp_path)
    assert config.mqtt.password.value().get_secret_value() == "from-file"
    assert "from-file" not in json.dumps(config.model_dump(mode="json"))

    monkeypatch.setenv("EA_PW", "from-env")
    config = parse_config(_config(mqtt={"username": "u", "password": {"env": "EA_PW"}}), "s.yaml")
    assert config.mqtt.password.value().get_secret_value() == "from-env"
    assert "from-env" not in repr(config.mqtt.password.value())

    with pytest.raises(ConfigError) as caught:
        parse_config(_config(mqtt={"password": "hunter2"}), "s.yaml")
    assert "inline secrets are refused" in str(caught.value) and "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="environment variable EA_MISSING"):
        parse_config(_config(mqtt={"password": {"env": "EA_MISSING"}}), "s.yaml")
    with pytest.raises(ConfigError, match="nope: cannot read secret file"):
        parse_config(_config(mqtt={"password": {"file": "nope"}}), "s.yaml", tmp_path)


def test_json_logs_carry_extra_fields():
    record = logging.makeLogRecord({"name": "x", "levelname": "WARNING", "msg": "camera %s lost", "args": ("c1",),
                                    "camera": "c1"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "camera c1 lost" and entry["camera"] == "c1" and entry["level"] == "warning"


def test_outbox_keeps_order_across_reopen_and_drops_oldest_results_never_alerts(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", max_results=3)
    kinds = [RESULT, ALERT, RESULT, ALERT, RESULT, RESULT, ALERT, RESULT]
    seqs = [outbox.put(kind, f"t/{kind}", {"n": n}) for n, kind in enumerate(kinds)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    rows = outbox.after(0, 100)
    # 5 results with room for 3: the two oldest results (n=0, n=2) went, every alert stayed
    assert [json.loads(row.payload)["n"] for row in rows] == [1, 3, 4, 5, 6, 7]
    assert all(json.loads(row.payload)["seq"] == row.seq for row in rows)
    assert outbox.dropped_results == 2
    outbox.remove(rows[0].seq)
    outbox.close()

    reopened = Outbox(tmp_path / "o.sqlite", max_results=3)
    assert [json.loads(row.payload)["n"] for row in reopened.after(0, 100)] == [3, 4, 5, 6, 7]
    assert [json.loads(row.payload)["n"] for row in reopened.after(rows[2].seq, 2)] == [5, 6]
    assert reopened.put(RESULT, "t", {}) > seqs[-1]  # seq is never reused
    assert reopened.pending() == 5  # a result was dropped to make room: still 3 results, 2 alerts


def test_evidence_rotation_deletes_oldest_beyond_the_bound(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # noise: JPEGs of similar size
    store = EvidenceStore(tmp_path, max_bytes=1, jpeg_quality=90)
    size = store.save("cam", "probe", picture, time.time()).stat().st_size
    store = EvidenceStore(tmp_path, max_bytes=int(size * 3.5), jpeg_quality=90)  # picks up the earlier file
    paths = [store.save("cam", f"id{n}", picture, time.time() + n) for n in range(6)]
    remaining = sorted(p for p in tmp_path.rglob("*.jpg"))
    assert remaining == sorted(paths[-3:])
    assert store.total_bytes == sum(p.stat().st_size for p in remaining) <= store.max_bytes


def test_folder_watcher_waits_for_a_file_to_stop_growing(tmp_path):
    watcher = FolderWatcher(WatchConfig(path=tmp_path, settle_s=1.0))
    image = tmp_path / "part.png"
    image.write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("ignored")
    assert watcher.ready(now=0.0) == []
    assert watcher.ready(now=0.9) == []
    with open(image, "ab") as handle:
        handle.write(b" and the rest")
    assert watcher.ready(now=1.5) == []  # grew: the clock starts again
    assert watcher.ready(now=2.6) == [image]
    assert watcher.finish(image, ok=True) == tmp_path / "processed" / "part.png"
    (tmp_path / "part.png").write_bytes(b"second part with the same name")
    watcher.ready(now=3.0)
    moved = watcher.finish(image, ok=False)
    assert moved.parent == tmp_path / "failed" and watcher.ready(now=9.0) == []


def test_the_daemon_imports_neither_torch_nor_the_training_package():
    code = ("import sys, runtime.station.service; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'edge_anomaly')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_video_source_reads_frames_and_a_missing_camera_is_a_source_error(tmp_path):
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for shade in (40, 120, 200):
        writer.write(np.full((48, 64, 3), shade, np.uint8))
    writer.release()
    source = open_source(SourceConfig(kind="video", path=video))
    frames = [source.read() for _ in range(3)]
    assert [(frame.source, frame.index) for frame in frames] == [(str(video), n) for n in range(3)]
    shades = [min((40, 120, 200), key=lambda shade: abs(shade - frame.image.mean())) for frame in frames]
    assert shades == [40, 120, 200]
    assert frames[0].image.shape == (48, 64, 3)
    with pytest.raises(SourceError, match="no more frames"):  # the camera worker starts a looping video again
        source.read()
    with pytest.raises(SourceError, match="video file not found"):
        open_source(SourceConfig(kind="video", path=tmp_path / "gone.avi"))
    with pytest.raises(SourceError, match="cannot open"):  # back-off is the worker's: one attempt here
        open_source(SourceConfig(kind="stream", url="rtsp://user:hunter2@127.0.0.1:9/none")).read()


def test_each_source_says_how_its_frames_end_and_whether_a_codec_made_them(tmp_path):
    """What the camera worker asks a source instead of comparing kind names (runtime.sources.Source)."""
    cv2.imwrite(str(tmp_path / "part.png"), np.full((8, 8, 3), 90, np.uint8))
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    writer.write(np.full((16, 16, 3), 90, np.uint8))
    writer.release()
    opened = {
        "folder once": open_source(SourceConfig(kind="images", path=tmp_path, loop=False)),
        "folder looping": open_source(SourceConfig(kind="images", path=tmp_path)),
        "video once": open_source(SourceConfig(kind="video", path=video, loop=False)),
        "video looping": open_source(SourceConfig(kind="video", path=video, loop=True)),
        "stream": open_source(SourceConfig(kind="stream", url="rtsp://127.0.0.1:9/none")),
        "usb camera": open_source(SourceConfig(kind="camera", device=0)),
    }
    described = {name: (source.kind, source.ends, source.restarts_at_end, source.compressed)
                 for name, source in opened.items()}
    assert described == {
        "folder once": ("images", True, False, False), "folder looping": ("images", False, False, False),
        "video once": ("video", True, False, True), "video looping": ("video", False, True, True),
        "stream": ("stream", False, False, True), "usb camera": ("camera", False, False, False)}
    for source in opened.values():
        source.close()


def test_stream_credentials_never_reach_the_frame_label():
    source = open_source(SourceConfig(kind="stream", url="rtsp://user:hunter2@127.0.0.1:9/none"))
    assert source.name == "rtsp://user:***@127.0.0.1:9/none"
    with pytest.raises(SourceError) as caught:
        source.read()
    assert "hunter2" not in str(caught.value)
