"""The daemon end to end: a real mosquitto, ``edge-anomaly serve`` as a subprocess, a paho client as the PLC.

The tests of the first part share one running station (trigger, continuous, folder and a camera
that appears late) and run in file order; the last of them stops it with SIGTERM. The tests
after it each start their own broker and daemon: broker outage, kill -9, credentials.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from runtime.detector import Detector
from runtime.image_io import list_images, read_image
from runtime.station.messages import iso_time
from tests.harness.station import (
    STATION,
    Broker,
    DaemonProcess,
    Probe,
    StationLine,
    copy_images,
    make_certificates,
    patience,
    station_config,
    wait_until,
)

pytestmark = pytest.mark.slow  # the station as a subprocess, a real broker: not in -m "not slow"


def _camera(name: str, bundle: Path, mode: str, **settings) -> dict:
    return {"name": name, "bundle": str(bundle), "mode": mode, **settings}


def _replay(folder: Path, **settings) -> dict:
    return {"kind": "images", "path": str(folder), "reopen": {"min_s": 0.2, "max_s": 0.5}, **settings}


def _anomalous_images(boards: Path) -> list[Path]:
    return [path for defect in ("missing_component", "scratch", "foreign_object")
            for path in list_images(boards / "test" / defect)]


def _outbox_rows(path: Path) -> list[tuple[int, str, dict]]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT seq, kind, payload FROM messages ORDER BY seq").fetchall()
    return [(seq, kind, json.loads(payload)) for seq, kind, payload in rows]


def _renamed_bundle(bundle: Path, target: Path, name: str) -> Path:
    """A valid copy of ``bundle`` under another name (so another bundle hash, the same engine)."""
    shutil.copytree(bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    return target


@dataclass
class Line(StationLine):
    bundle: Path
    trigger_images: list[Path]
    continuous_images: list[Path]


@pytest.fixture(scope="module")
def line(board_bundle, boards, tmp_path_factory):
    """One broker and one station with four cameras, shared by the tests up to the SIGTERM test."""
    root = tmp_path_factory.mktemp("line")
    bundle = board_bundle[0]
    broker = Broker(root / "broker")
    broker.start()
    test = boards / "test"
    trigger_images = copy_images([test / "good" / "000.png", test / "missing_component" / "000.png",
                                  test / "good" / "002.png", test / "scratch" / "000.png", test / "good" / "001.png"],
                                 root / "trigger")
    trigger_images[2].write_bytes(b"\x89PNG\r\n\x1a\n truncated by a flaky cable")  # a corrupt frame
    continuous_images = copy_images(list_images(test / "good")[:4], root / "continuous")
    (root / "drop").mkdir()
    cameras = [
        _camera("trig", bundle, "trigger", source=_replay(root / "trigger")),
        _camera("cont", bundle, "continuous", rate_hz=4, source=_replay(root / "continuous")),
        _camera("drop", bundle, "folder", watch={"path": str(root / "drop"), "poll_s": 0.2, "settle_s": 0.6}),
        _camera("late", bundle, "continuous", rate_hz=2, source=_replay(root / "late")),
    ]
    config = station_config(broker.port, cameras, http={"enabled": True, "port": 0}, evidence={"max_mb": 20},
                            bundles_dir=str(root))  # cmd/reload takes bundles from here only
    daemon = DaemonProcess(root / "station", config).start()
    probe = Probe(broker.port)
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")
    yield Line(broker, daemon, probe, root, bundle, trigger_images, continuous_images)
    if daemon.process.poll() is None:
        daemon.kill9()
    probe.close()
    broker.stop()


@pytest.fixture(scope="module")
def detector(board_bundle) -> Detector:
    return Detector.load(board_bundle[0])


def test_trigger_answers_with_the_same_part_id_and_anomalies_raise_alerts(line, detector):
    for n in range(5):
        line.probe.publish("cmd/inspect", {"part_id": f"P-{n}", "camera": "trig"})
    results = {m.data["part_id"]: m.data for m in line.probe.wait_for("/trig/result", count=4)}
    error = line.probe.wait_for("/cmd/error", lambda d: d.get("part_id") == "P-2")[0].data
    assert error["command"] == "inspect" and "bad frame" in error["error"] and "002_good.png" in error["error"]

    served = {f"P-{n}": line.trigger_images[n] for n in (0, 1, 3, 4)}
    assert set(results) == set(served)
    expected = dict(zip(served, detector.predict([read_image(p) for p in served.values()]), strict=True))
    assert {r.label for r in expected.values()} == {"normal", "anomalous"}  # the check below can fail both ways
    for part_id, result in results.items():
        assert result["source"] == str(served[part_id])
        assert result["label"] == expected[part_id].label
        assert result["score"] == pytest.approx(expected[part_id].score, rel=1e-4)
        assert result["bundle"]["hash"] == detector.bundle.hash
        assert result["threshold"] == pytest.approx(detector.scoring.local.threshold)
        assert result["latency_ms"]["total"] >= result["latency_ms"]["inference"] > 0

    alerts = {m.data["part_id"]: m.data for m in line.probe.on("/trig/alert")}
    assert set(alerts) == {part_id for part_id, r in expected.items() if r.is_anomalous}
    for part_id, alert in alerts.items():
        assert alert["inspection"] == results[part_id]["inspection"] and alert["id"] != results[part_id]["id"]
        x, y, w, h = (alert["box"][k] for k in ("x", "y", "width", "height"))
        assert 0 <= x < x + w <= 320 and 0 <= y < y + h <= 256
        thumb = cv2.imdecode(np.frombuffer(base64.b64decode(alert["thumbnail"]["data"]), np.uint8), cv2.IMREAD_COLOR)
        assert max(thumb.shape[:2]) == 128 == max(alert["thumbnail"]["width"], alert["thumbnail"]["height"])
        assert cv2.imread(alert["heatmap_path"]).shape == (256, 320, 3)
    assert all(r["heatmap_path"] is None for p, r in results.items() if p not in alerts)


def test_malformed_commands_are_answered_on_cmd_error_and_the_daemon_goes_on(line):
    bad = [("inspect", b"{not json"), ("inspect", {"camera": "trig"}), ("inspect", {"part_id": "Q1", "camera": "nope"}),
           ("inspect", {"part_id": "Q2", "camera": "cont"}), ("explode", {}), ("reload", {"bundle": 5})]
    for command, payload in bad:
        line.probe.publish(f"cmd/{command}", payload)
    errors = [m.data for m in line.probe.wait_for("/cmd/error", lambda d: d.get("part_id") != "P-2", count=len(bad))]
    assert [e["command"] for e in errors] == [command for command, _ in bad]
    for error, fragment in zip(errors, ["not JSON", "'part_id' must be", "unknown camera 'nope'",
                                        "runs in 'continuous' mode", "unknown command 'explode'",
                                        "'bundle' must be a path"], strict=True):
        assert fragment in error["error"]
    assert errors[2]["part_id"] == "Q1" and errors[0]["payload"] == "{not json"

    line.probe.publish("cmd/inspect", {"part_id": 4711})  # no camera: every trigger camera answers
    assert line.probe.wait_for("/trig/result", lambda d: d["part_id"] == "4711")


def test_folder_mode_reads_a_file_once_it_is_complete_and_sets_corrupt_ones_aside(line, detector, boards):
    drop = line.root / "drop"
    image = boards / "test" / "scratch" / "001.png"
    data = image.read_bytes()
    with open(drop / "slow.png", "wb") as handle:  # a slow FTP upload: half, a pause, the rest
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(0.4)
        handle.write(data[len(data) // 2:])
    (drop / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = line.probe.wait_for("/drop/result")[0].data
    assert result["source"] == "slow.png"
    assert result["label"] == detector.predict([read_image(image)])[0].label == "anomalous"
    wait_until(lambda: (drop / "failed" / "broken.jpg").is_file(), 10, "the corrupt file to be set aside")
    assert (drop / "processed" / "slow.png").read_bytes() == data
    beat = line.probe.wait_for("/heartbeat", lambda d: d["cameras"]["drop"]["errors"] >= 1)[0].data
    assert beat["cameras"]["drop"]["frames"] == 1
    time.sleep(0.5)
    assert len(line.probe.on("/drop/result")) == 1  # read once, not once per poll


def test_healthz_names_a_missing_camera_and_metrics_count_frames(line):
    port = next(e["port"] for e in line.daemon.log_entries() if "port" in e)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert caught.value.code == 503
    health = json.loads(caught.value.read())
    assert health["status"] == "degraded" and health["cameras"]["late"] == "reconnecting"
    assert any("camera late" in problem and "not found" in problem for problem in health["problems"])
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    frames = next(line for line in metrics.splitlines() if line.startswith('edge_anomaly_frames_total{camera="cont"}'))
    assert float(frames.split()[-1]) >= 1
    assert re.search(r"^edge_anomaly_mqtt_connected 1\.0$", metrics, re.MULTILINE)
    assert 'edge_anomaly_camera_up{camera="late"} 0.0' in metrics


def test_a_camera_that_comes_and_goes_is_reported_in_status(line, boards):
    status = line.probe.wait_for("/status", lambda d: d["cameras"]["late"]["state"] == "reconnecting")[-1].data
    assert "image folder not found" in status["cameras"]["late"]["error"]
    self_test = status["cameras"]["late"]["bundle"]["self_test"]  # the bundle checked itself at start
    assert self_test["passed"] and self_test["images"] == 8 and self_test["local_cpu"]["model"]
    copy_images([boards / "test" / "good" / "003.png"], line.root / "late")
    line.probe.wait_for("/status", lambda d: d["cameras"]["late"]["state"] == "ok")
    line.probe.wait_for("/late/result")
    after = len(line.probe.on("/status"))  # before the unplugging: its status may come at once
    shutil.rmtree(line.root / "late")  # unplugged
    wait_until(lambda: any(m.data["cameras"]["late"]["state"] == "reconnecting"
                           for m in line.probe.on("/status")[after:]), 10, "the camera to be reported lost")
    assert line.daemon.process.poll() is None


def test_reload_refuses_a_tampered_bundle_and_swaps_a_good_one_without_dropping_frames(line, detector):
    tampered = line.root / "tampered"
    shutil.copytree(line.bundle, tampered)
    model = tampered / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    line.probe.publish("cmd/reload", {"camera": "trig", "bundle": str(tampered)})
    error = line.probe.wait_for("/cmd/error", lambda d: d.get("bundle") == str(tampered))[0].data
    assert "SHA-256 mismatch" in error["error"] and f"keeps {detector.name}" in error["error"]
    line.probe.publish("cmd/inspect", {"part_id": "after-tamper", "camera": "trig"})
    result = line.probe.wait_for("/trig/result", lambda d: d["part_id"] == "after-tamper")[0].data
    assert result["bundle"]["hash"] == detector.bundle.hash

    renamed = _renamed_bundle(line.bundle, line.root / "bundle-v2", "boards-v2")
    line.probe.publish("cmd/reload", {"camera": "cont", "bundle": str(renamed)})
    line.probe.wait_for("/status", lambda d: d["cameras"]["cont"]["bundle"]["name"] == "boards-v2")
    line.probe.wait_for("/cont/result", lambda d: d["bundle"]["name"] == "boards-v2", count=2)
    stream = [m.data for m in line.probe.on("/cont/result")]
    names = [d["bundle"]["name"] for d in stream]
    assert names == sorted(names, key=lambda name: name == "boards-v2")  # old ones, then new ones only
    order = [str(p) for p in line.continuous_images]
    for before, after in zip(stream, stream[1:], strict=False):  # the replay is cyclic: no frame skipped
        assert order.index(after["source"]) == (order.index(before["source"]) + 1) % len(order)
    assert [d["seq"] for d in stream] == sorted(d["seq"] for d in stream)


def test_sighup_rereads_the_config_and_keeps_running_on_a_bad_one(line):
    good = yaml.safe_load(line.daemon.config_path.read_text())
    line.daemon.config_path.write_text("station: [unclosed")
    line.daemon.send(signal.SIGHUP)
    wait_until(lambda: "keeping the running config" in line.daemon.log, 10, "the bad config to be refused")
    good["cameras"].append(_camera("trig2", line.bundle, "trigger", source=_replay(line.root / "trigger")))
    good["cameras"][0]["bundle"] = str(_renamed_bundle(line.bundle, line.root / "bundle-v3", "boards-v3"))
    line.daemon.write_config(good)
    line.daemon.send(signal.SIGHUP)
    line.probe.wait_for("/status", lambda d: d["cameras"].get("trig2", {}).get("state") == "ok"
                        and d["cameras"]["trig"]["bundle"]["name"] == "boards-v3")
    assert "camera trig (re)started" not in line.daemon.log  # only its bundle changed: swapped in place
    assert "camera trig2 (re)started" in line.daemon.log
    line.probe.publish("cmd/inspect", {"part_id": "both"})
    line.probe.wait_for("/trig2/result", lambda d: d["part_id"] == "both")
    # trig answers too: with a result, or on cmd/error when its replay is at the corrupt frame again
    wait_until(lambda: [m for m in line.probe.on("/trig/result") + line.probe.on("/cmd/error")
                        if m.data.get("part_id") == "both" and m.data["camera"] == "trig"], 10, "trig's answer")


def test_sigterm_drains_the_outbox_and_publishes_offline(line):
    assert line.daemon.stop() == 0
    offline = line.probe.wait_for("/status", lambda d: d["state"] == "offline")[0].data
    assert offline["reason"] == "shutdown"
    assert _outbox_rows(line.root / "station" / "outbox.sqlite") == []
    assert "0 message(s) wait in the outbox" in line.daemon.log


def test_broker_outage_every_alert_produced_meanwhile_arrives_in_order_once(
        broker_factory, probe_factory, daemon_factory, board_bundle, boards, tmp_path):
    broker = broker_factory(persistence=True)  # keeps the PLC's durable session across the restart
    frames = copy_images(_anomalous_images(boards), tmp_path / "frames")
    camera = _camera("cam", board_bundle[0], "continuous", rate_hz=6, source=_replay(tmp_path / "frames"))
    config = station_config(broker.port, [camera], evidence={"save": "none"}, mqtt={"protocol": "3.1.1"})
    daemon = daemon_factory(tmp_path / "station", config).start()
    probe = probe_factory(broker.port, client_id="plc-line1", durable=True)
    probe.wait_for("/cam/alert", count=3)
    broker.stop()
    down = time.time()
    time.sleep(2.5)
    broker.start()
    up = time.time()
    probe.wait_for("/cam/alert", lambda d: d["timestamp"] > iso_time(up + 0.5))  # flowing again
    assert daemon.stop() == 0
    final = probe.wait_for("/heartbeat", lambda d: d["cameras"]["cam"]["state"] == "stopped")[0].data
    assert final["outbox"]["pending"] == 0 and final["mqtt"]["connections"] == 2
    assert final["anomalies"] == final["frames"] >= len(frames)  # every frame here is a defect
    wait_until(lambda: len({m.data["id"] for m in probe.on("/cam/alert")}) == final["anomalies"]
               and len({m.data["id"] for m in probe.on("/cam/result")}) == final["frames"], 15, "every message")

    alerts = probe.on("/cam/alert")
    meanwhile = [m.data for m in alerts if iso_time(down) < m.data["timestamp"] < iso_time(up)]
    assert len(meanwhile) >= 5
    ids = [m.data["id"] for m in alerts]
    assert all(ids.count(alert["id"]) == 1 for alert in meanwhile)  # none twice
    seqs = [m.data["seq"] for m in sorted(alerts + probe.on("/cam/result"), key=lambda m: m.at)]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen) == list(range(1, len(first_seen) + 1))  # in order, no gap


def test_kill9_publishes_offline_and_a_restart_delivers_the_outbox(
        broker_factory, probe_factory, daemon_factory, board_bundle, boards, tmp_path):
    broker = broker_factory()
    probe = probe_factory(broker.port)
    copy_images(_anomalous_images(boards)[:4], tmp_path / "frames")
    camera = _camera("cam", board_bundle[0], "continuous", rate_hz=8, source=_replay(tmp_path / "frames"))
    config = station_config(broker.port, [camera], evidence={"save": "none"}, mqtt={"connect_timeout_s": 0.5})
    first = daemon_factory(tmp_path / "station", config).start()
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["cam"]["state"] == "ok")
    first.kill9()
    will = probe.wait_for("/status", lambda d: d["state"] == "offline", timeout=5)[0]
    assert will.data == {"state": "offline", "station": STATION, "reason": "connection lost", "timestamp": None}

    broker.stop()  # the next run inspects into its outbox only, and dies too
    outbox = tmp_path / "station" / "outbox.sqlite"
    second = daemon_factory(tmp_path / "station", config).start()
    wait_until(lambda: outbox.is_file() and len(_outbox_rows(outbox)) >= 8, 30, "the outbox to fill")
    second.kill9()
    stranded = _outbox_rows(outbox)
    assert {kind for _, kind, _ in stranded} == {"result", "alert"}

    subscribed = probe.subscriptions
    broker.start()
    wait_until(lambda: probe.subscriptions > subscribed, 10, "the probe to resubscribe")
    restarted = time.time()
    third = daemon_factory(tmp_path / "station", config).start()
    wanted = {payload["id"]: seq for seq, _, payload in stranded}

    def delivered() -> list[dict]:  # (a message whose PUBACK the first run never saw may also have come before)
        return [m.data for m in sorted(probe.on("/cam/result") + probe.on("/cam/alert"), key=lambda m: m.at)
                if m.at > restarted and m.data["id"] in wanted]

    wait_until(lambda: len(delivered()) >= len(wanted), 30, "the stranded messages to arrive")
    assert [d["seq"] for d in delivered()] == sorted(wanted.values())  # each once, in order
    assert third.stop() == 0


def test_rate_hz_is_per_second_of_real_time_for_a_looping_video_and_a_replayed_folder(
        broker_factory, probe_factory, daemon_factory, board_bundle, boards, tmp_path):
    # A 10 fps video of 12 frames loops every 1.2 s; read by its own clock it gave 5.4 results a
    # second at rate_hz 2 (as fast as inference, one frame in five). Paced by the wall clock: 4 a second.
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 256))
    for path in list_images(boards / "test" / "good")[:12]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    copy_images(list_images(boards / "test" / "good")[:5], tmp_path / "frames")
    broker = broker_factory()
    probe = probe_factory(broker.port)
    cameras = [_camera("video", board_bundle[0], "continuous", rate_hz=4,
                       source={"kind": "video", "path": str(video), "reopen": {"min_s": 0.2, "max_s": 0.5}}),
               _camera("folder", board_bundle[0], "continuous", rate_hz=4, source=_replay(tmp_path / "frames"))]
    config = station_config(broker.port, cameras, evidence={"save": "none"})
    daemon = daemon_factory(tmp_path / "station", config).start()
    for name in ("video", "folder"):
        probe.wait_for(f"/{name}/result", count=3, timeout=60)
    window_s = 4.0
    start = time.time()
    time.sleep(window_s + 1.0)  # the last second: results started inside the window still on their way
    assert daemon.stop() == 0
    for name in ("video", "folder"):
        inside = [m.data for m in probe.on(f"/{name}/result")
                  if iso_time(start) <= m.data["timestamp"] < iso_time(start + window_s)]
        # at most 4 a second (+1 for where the window cuts); fewer only if inference falls behind under load
        assert window_s * 4 / 2 / patience(1) <= len(inside) <= window_s * 4 + 1, (name, len(inside))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_wrong_password_is_refused_with_a_clear_error(protocol, broker_factory, daemon_factory, board_bundle,
                                                        tmp_path):
    broker = broker_factory(users={"line1": "correct horse"})
    (tmp_path / "password").write_text("wrong battery\n")
    camera = _camera("cam", board_bundle[0], "trigger", source={"kind": "images", "path": str(tmp_path)})
    config = station_config(broker.port, [camera], log={"format": "text"},
                            mqtt={"protocol": protocol, "username": "line1", "password": {"file": "../password"}})
    daemon = daemon_factory(tmp_path / "station", config).start()
    assert daemon.wait(timeout=60) == 2
    assert f"error: the broker at 127.0.0.1:{broker.port} refused the connection" in daemon.log
    assert "check mqtt.username and the password file or variable" in daemon.log
    assert "wrong battery" not in daemon.log


def test_the_right_password_from_an_environment_variable_is_accepted(broker_factory, probe_factory, daemon_factory,
                                                                     board_bundle, boards, tmp_path):
    broker = broker_factory(users={"line1": "correct horse", "plc": "plc pass"})
    probe = probe_factory(broker.port, username="plc", password="plc pass")
    copy_images([boards / "test" / "good" / "000.png"], tmp_path / "frames")
    camera = _camera("cam", board_bundle[0], "trigger", source=_replay(tmp_path / "frames"))
    config = station_config(broker.port, [camera], mqtt={"username": "line1", "password": {"env": "LINE1_MQTT"}})
    daemon = daemon_factory(tmp_path / "station", config, env={"LINE1_MQTT": "correct horse"}).start()
    probe.wait_for("/status", lambda d: d["state"] == "online")
    probe.publish("cmd/inspect", {"part_id": "auth-ok"})
    probe.wait_for("/cam/result", lambda d: d["part_id"] == "auth-ok")
    assert "correct horse" not in daemon.log
    assert daemon.stop() == 0




def test_tls_with_a_client_certificate_connects_and_an_untrusted_broker_is_refused(
        broker_factory, probe_factory, daemon_factory, board_bundle, tmp_path):
    certificates = make_certificates(tmp_path / "pki")
    broker = broker_factory(tls=certificates)
    probe = probe_factory(broker.port)  # on the broker's plain listener
    camera = _camera("cam", board_bundle[0], "trigger", source=_replay(tmp_path))
    tls = {"ca": str(certificates["ca"]), "cert": str(certificates["client_cert"]),
           "key": str(certificates["client_key"])}
    config = station_config(broker.tls_port, [camera], mqtt={"tls": tls})
    daemon = daemon_factory(tmp_path / "station", config).start()
    probe.wait_for("/status", lambda d: d["state"] == "online")
    assert daemon.stop() == 0

    untrusted = station_config(broker.tls_port, [camera], log={"format": "text"},
                               mqtt={"tls": {**tls, "ca": str(certificates["other_ca"])}})
    refused = daemon_factory(tmp_path / "station2", untrusted).start()
    assert refused.wait(timeout=60) == 2
    assert f"error: TLS with the broker at 127.0.0.1:{broker.tls_port} failed" in refused.log
    assert "certificate verify failed" in refused.log
