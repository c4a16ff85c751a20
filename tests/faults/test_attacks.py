"""The station under attack, round two (issue 23): each numbered break reproduced against a real mosquitto, a real
station process, real sockets and real sqlite, asserting what must hold now.

The page tests share one station (continuous camera, token and a user, plain HTTP on a fixed port) and run in file
order; the last of them restarts it. The others start their own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.image_io import list_images
from tests.harness.station import (
    STATION,
    Broker,
    DaemonProcess,
    Probe,
    copy_images,
    fetch,
    fill_disk,
    free_port,
    page_camera,
    page_port,
    station_config,
    wait_until,
)

TOKEN = "line-1-review-token"
PASSWORD = "anna's password"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _trigger_camera(bundle: Path, frames: Path, **settings) -> dict:
    return {"name": "trig", "bundle": str(bundle), "mode": "trigger",
            "source": {"kind": "images", "path": str(frames)}, **settings}


def _frames(boards: Path, folder: Path, count: int = 3) -> Path:
    copy_images(list_images(boards / "test" / "good")[:count], folder)
    return folder


@dataclass
class Page:
    broker: Broker
    daemon: DaemonProcess
    probe: Probe
    config: dict
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **options) -> tuple[int, object, bytes]:
        return fetch(self.url + path, **options)

    def json(self, path: str) -> dict:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def review(self, inspection: str, verdict: str = "normal", headers: dict | None = None):
        return fetch(f"{self.url}/api/inspections/{inspection}/review", "POST", headers or BEARER,
                     {"verdict": verdict})

    def anomalous(self, count: int = 1) -> list[dict]:
        return wait_until(lambda: [i for i in self.json("/api/inspections?verdict=anomalous&limit=50")["inspections"]
                                   if i["links"]["frame"] and not i["review"]][:count] or None, 30,
                          "an unreviewed anomalous inspection with its frame")


@pytest.fixture(scope="module")
def page(board_bundle, boards, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacked-page")
    broker = Broker(root / "broker")
    broker.start()
    (root / "token").write_text(TOKEN + "\n")
    camera = page_camera(boards, board_bundle[0], root / "frames")
    port = free_port()
    config = station_config(broker.port, [camera], evidence={"save": "all"}, http={
        "enabled": True, "port": port, "token": {"file": str(root / "token")},
        "users": {"anna": {"env": "ANNA_PW"}}, "hosts": ["station-1.plant.example"]})
    daemon = DaemonProcess(root / "station", config, env={"ANNA_PW": PASSWORD}).start()
    probe = Probe(broker.port)
    station = Page(broker, daemon, probe, config, port)
    page_port(daemon)
    probe.wait_for("/cam/alert", timeout=30)
    yield station
    if station.daemon.process.poll() is None:
        station.daemon.kill9()
    probe.close()
    broker.stop()


def _answers(url: str) -> bool:
    try:
        return fetch(url)[0] == 200
    except OSError:  # not listening yet
        return False


def _raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# -- 14. DNS rebinding: a foreign page's host name read every open route -------------------------------------------

def test_attack14_only_configured_host_names_ip_literals_and_localhost_are_served(page):
    for host in ("evil.example", "station-1.plant.example.evil.example", "localhost.evil.example"):
        answer = _raw_request(page.port, f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                              .encode())
        assert answer.startswith(b"HTTP/1.1 421 ") or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert host.encode() in answer and b"cameras" not in answer
    for host in (f"127.0.0.1:{page.port}", f"localhost:{page.port}", "station-1.plant.example", "[::1]:9108",
                 "10.1.2.3"):
        answer = _raw_request(page.port, f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                              .encode())
        assert answer.startswith(b"HTTP/1.1 200 "), (host, answer[:200])


# -- 10. trust: [] switched signature checks off ------------------------------------------------------------------

def test_attack10_an_empty_trust_list_is_an_error_and_no_list_is_shown_as_unsigned_allowed(page, board_bundle,
                                                                                           tmp_path):
    from runtime.station.config import ConfigError, parse_config

    config = station_config(1883, [_trigger_camera(board_bundle[0], tmp_path)], trust=[])
    with pytest.raises(ConfigError, match="trust"):
        parse_config(config, "station.yaml")
    path = tmp_path / "station.yaml"
    path.write_text(json.dumps(config))
    run = subprocess.run([sys.executable, "-m", "edge_anomaly", "serve", "--config", str(path), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "trust" in run.stderr and "empty" in run.stderr, run.stderr
    assert page.json("/api/status")["trust"] == {"required": False, "keys": []}


# -- 12. unhandled 500s with tracebacks -----------------------------------------------------------------------

def test_attack12_every_bad_path_or_query_value_gets_a_4xx_naming_it(page):
    bad = ["/evidence/x%00.jpg", "/evidence/%00", "/api/inspections?before=1e300", "/api/inspections?before=-1e300",
           "/api/inspections?limit=1e300", "/api/inspections?since=1e999", "/api/scores?hours=nan",
           "/api/inspections/x%00", "/api/inspections/x%00/thumb.jpg", "/api/cameras/%00/live.jpg",
           "/static/%00", "/api/inspections?before=9223372036854775808",
           "/api/inspections?limit=nan", "/evidence/" + "a/" * 2000 + "x.jpg"]
    for path in bad:
        status, _, body = page.get(path)
        assert 400 <= status < 500, (path, status, body[:300])
    for path, name in (("/api/inspections?before=1e300", "before"), ("/api/inspections?limit=1e300", "limit")):
        status, _, body = page.get(path)
        assert status == 400 and name in json.loads(body)["error"], (path, body)
    assert "Traceback" not in page.daemon.log


# -- 3. anyone could lock the reviewer out ---------------------------------------------------------------------

def test_attack3_requests_without_credentials_lock_nobody_out_and_guessing_locks_only_what_was_guessed(page):
    inspection = page.anomalous()[0]["id"]
    for _ in range(15):  # a page that is not signed in, a crawler: no credentials at all
        assert page.review(inspection, headers={"Content-Type": "application/json"})[0] == 401
    status, _, body = page.review(inspection)
    assert status == 200, body
    for _ in range(12):  # someone guessing anna's password
        assert page.review(inspection, headers=_basic("anna", "guess"))[0] in (401, 429)
    assert page.review(inspection, headers=_basic("anna", "guess"))[0] == 429
    status, _, body = page.review(inspection, "defect")  # the token is not what was guessed
    assert status == 200, body


# -- 7. a locked history database stalled the camera line ------------------------------------------------------

def test_attack7_a_locked_history_database_does_not_stall_the_camera(page):
    page.anomalous()  # the history is being written
    with closing(sqlite3.connect(page.daemon.folder / "history.sqlite", timeout=1, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")  # another writer holds the database (a backup, a stuck page query)
        started = time.time()
        time.sleep(8)
        db.execute("ROLLBACK")
    time.sleep(1)
    arrivals = sorted(m.at for m in page.probe.on("/cam/result") if started <= m.at <= started + 9)
    assert len(arrivals) >= 20, len(arrivals)  # 4 frames/s
    assert max(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) < 1.5
    wait_until(lambda: page.json("/healthz")["status"] == "ok", 15, "health to recover")


# -- 5. a database error during a review left the frame filed without a record --------------------------------

def test_attack5_a_review_is_all_or_nothing_and_the_tar_holds_only_recorded_frames(page):
    inspection = page.anomalous()[0]["id"]
    folder = page.daemon.folder / "reviewed" / "cam" / "normal"
    with closing(sqlite3.connect(page.daemon.folder / "history.sqlite", timeout=1, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        status, _, body = page.review(inspection)
        db.execute("ROLLBACK")
    assert 500 <= status < 600 and b"Traceback" not in body and "review" in json.loads(body)["error"], body
    assert not list(folder.glob(f"{inspection}.*")), "a frame was filed without its review"
    assert page.json(f"/api/inspections/{inspection}")["reviews"] == []
    # a station killed between filing and recording left a frame without a record: it is not handed out
    folder.mkdir(parents=True, exist_ok=True)
    evidence = next((page.daemon.folder / "evidence").rglob("*.frame.jpg"))
    (folder / "deadbeef.jpg").write_bytes(evidence.read_bytes())
    status, _, body = page.review(inspection)
    assert status == 200, body
    status, _, body = page.get("/api/reviewed/cam/normal.tar", headers=BEARER)
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = {Path(member.name).name for member in archive.getmembers()}
    assert f"{inspection}.jpg" in names and "deadbeef.jpg" not in names
    assert page.json("/api/status")["cameras"]["cam"]["reviewed"]["normal"] == len(names)


# -- 2. about 200 idle connections took the page and /healthz down -----------------------------------------------

def test_attack2_idle_and_slow_connections_cannot_starve_health_or_the_page(page):
    idle, slow = [], []
    try:
        for _ in range(150):
            idle.append(socket.create_connection(("127.0.0.1", page.port), timeout=5))
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", page.port), timeout=5)
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end of the header
            slow.append(sock)
        time.sleep(0.5)
        for path in ("/healthz", "/api/status", "/"):
            started = time.perf_counter()
            status, _, body = page.get(path, timeout=5)
            assert status == 200 and time.perf_counter() - started < 1.0, (path, status, body[:200])
        # the half-sent header is not kept open: the server closes it
        probe = slow[-1]
        probe.settimeout(30)
        started = time.monotonic()
        try:
            assert probe.recv(1024) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 25
        # a body that never ends is not waited for either
        inspection = page.anomalous()[0]["id"]
        request = (f"POST /api/inspections/{inspection}/review HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                   '{"verd').encode()
        started = time.monotonic()
        answer = _raw_request(page.port, request, timeout=30)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 25, answer[:200]
    finally:
        for sock in idle + slow:
            sock.close()


# -- 4. live-feed event ids restarted at 1 in each process -------------------------------------------------------

def _events(port: int, last_event_id: str | None, count: int, within_s: float) -> list[dict]:
    headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events", headers=headers)
    events, current, started = [], {}, time.time()
    with urllib.request.urlopen(request, timeout=within_s + 5) as stream:
        while len(events) < count and time.time() - started < within_s:
            line = stream.readline().decode().rstrip("\n")
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "id" in current:
                events.append(current)
                current = {}
    return events


def test_attack4_event_ids_are_unique_across_restarts_and_a_stale_id_starts_from_now(page):
    before = _events(page.port, None, 40, 20)
    assert len(before) == 40
    page.daemon.kill9()
    page.daemon.start()
    page.probe.wait_for("/status", lambda d: d["state"] == "online" and d.get("pid") == page.daemon.process.pid,
                        timeout=30)
    wait_until(lambda: _answers(page.url + "/healthz"), 30, "the restarted page")
    after = _events(page.port, before[-1]["id"], 2, 10)
    assert len(after) == 2, "a page reconnecting with its last id from before the restart got nothing"
    assert not {e["id"] for e in after} & {e["id"] for e in before}
    assert all(e["data"]["time"] > before[-1]["data"]["time"] for e in after if "time" in e["data"])
    assert _events(page.port, "999999999", 1, 10), "an id above the current one got nothing"


# -- stations of their own -------------------------------------------------------------------------------------

def test_attack1_the_engine_runs_the_bytes_that_were_hashed(signed_bundles, keys, boards, tmp_path):
    """The bundle's files are swapped after the hash check: what the engine opens is still what was verified."""
    from runtime.backends import open_engine
    from runtime.bundle import open_bundle
    from runtime.detector import Detector
    from runtime.image_io import read_image
    from runtime.signing import TrustList

    trust = TrustList.load([keys["ours"][1]])
    frame = read_image(list_images(boards / "test" / "missing_component")[0])
    expected = Detector.load(signed_bundles / "boards").predict(frame).score
    folder = shutil.copytree(signed_bundles / "boards", tmp_path / "folder")
    tar = shutil.copyfile(signed_bundles / "boards.tar", tmp_path / "boards.tar")
    for source in (folder, tar):
        bundle = open_bundle(source, trust.verify)
        if source.is_dir():  # whoever can write the folder (not the key holder) swaps the model in between
            (source / bundle.engine.files["model"]).write_bytes(b"a model nobody signed" * 1000)
        else:
            tar.write_bytes(b"not a bundle")
        detector = Detector(bundle, open_engine(bundle))
        assert detector.predict(frame).score == pytest.approx(expected, rel=1e-5)
        assert bundle.source == source and bundle.folder != source


def test_attack8_a_corrupt_history_is_moved_aside_and_the_station_starts(broker, probe, stations, board_bundle,
                                                                        boards, tmp_path):
    camera = {"name": "cam", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 2,
              "source": {"kind": "images", "path": str(_frames(boards, tmp_path / "frames"))}}
    config = station_config(broker.port, [camera], http={"enabled": True, "port": 0})
    state = tmp_path / "station"
    state.mkdir()
    (state / "history.sqlite").write_bytes(b"SQLite format 3\0" + os.urandom(8192))  # torn by a power cut
    config_path = state / "station.yaml"
    config_path.write_text(json.dumps(config))
    run = subprocess.run([sys.executable, "-m", "edge_anomaly", "serve", "--config", str(config_path), "--check"],
                         capture_output=True, text=True, timeout=120, cwd=state)
    assert run.returncode == 0 and "history" in run.stdout and "moved aside" in run.stdout, run.stdout + run.stderr
    station = stations(config, name="station")
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["cam"]["state"] == "ok", timeout=30)
    port = page_port(station)
    wait_until(lambda: json.loads(fetch(f"http://127.0.0.1:{port}/api/inspections")[2])["inspections"], 20,
               "inspections in the fresh history")
    aside = [p for p in state.iterdir() if p.name.startswith("history.sqlite.corrupt-")]
    assert aside and aside[0].read_bytes().startswith(b"SQLite format 3\0")
    assert any("moved aside" in e.get("msg", "") for e in station.log_entries())
    assert station.stop() == 0


def test_attack9_retained_commands_are_answered_with_an_error_and_never_executed(broker, probe, stations,
                                                                                 board_bundle, boards, tmp_path):
    probe.client.publish(f"plant/{STATION}/cmd/inspect", json.dumps({"part_id": "ghost", "camera": "trig"}), qos=1,
                         retain=True).wait_for_publish(5)
    camera = _trigger_camera(board_bundle[0], _frames(boards, tmp_path / "frames"))
    station = stations(station_config(broker.port, [camera]))
    error = probe.wait_for("/cmd/error", lambda d: d.get("part_id") == "ghost", timeout=30)[0].data
    assert "retained" in error["error"] and error["command"] == "inspect" and error["camera"] == "trig"
    probe.publish("cmd/inspect", {"part_id": "real"})
    probe.wait_for("/trig/result", lambda d: d["part_id"] == "real")
    assert not [m for m in probe.on("/trig/result") if m.data["part_id"] == "ghost"]
    assert station.stop() == 0


def test_attack13_every_answer_to_a_trigger_names_its_part_and_camera(broker, probe, stations, board_bundle, boards,
                                                                      tmp_path):
    camera = _trigger_camera(board_bundle[0], _frames(boards, tmp_path / "frames"), trigger_queue=4)
    station = stations(station_config(broker.port, [camera], evidence={"save": "none"}))
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")
    probe.publish("cmd/inspect", b'{"part_id": "\\ud800", "camera": "trig"}')
    error = probe.wait_for("/cmd/error", lambda d: d.get("command") == "inspect")[0].data
    assert error["part_id"] == "\ud800" and error["camera"] == "trig" and "part_id" in error["error"]
    part_ids = [f"flood-{n}" for n in range(600)]  # within mosquitto's queue (max_queued_messages 1000)
    for part_id in part_ids:
        probe.client.publish(f"plant/{STATION}/cmd/inspect", json.dumps({"part_id": part_id, "camera": "trig"}), qos=1)
    wait_until(lambda: len([m for m in probe.on("/cmd/error") + probe.on("/trig/result")
                            if (m.data or {}).get("part_id", "").startswith("flood-")]) >= len(part_ids) - 10, 90,
               "answers to the flood")
    for message in probe.on("/cmd/error"):
        assert message.data.get("part_id") and message.data.get("camera") == "trig", message.data
    assert station.stop() == 0


@pytest.fixture
def small_state(tmpfs):
    """A 64 MB tmpfs for the station's state folder (the running bundle's copy lies there too), to be filled."""
    return tmpfs("64m")


def test_attack6_a_full_state_disk_files_no_empty_frame_and_health_reports_the_history(
        broker, probe, stations, board_bundle, boards, small_state, tmp_path):
    test = boards / "test"
    frames = copy_images([test / "missing_component" / "000.png", test / "scratch" / "001.png"], tmp_path / "frames")
    (tmp_path / "token").write_text(TOKEN)
    camera = {"name": "cam", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 4,
              "source": {"kind": "images", "path": str(frames[0].parent)}}
    config = station_config(broker.port, [camera], state_dir=str(small_state),
                            outbox={"path": str(tmp_path / "outbox.sqlite")},
                            evidence={"save": "all", "dir": str(tmp_path / "evidence")},
                            http={"enabled": True, "port": 0, "token": {"file": str(tmp_path / "token")}})
    station = stations(config)
    url = f"http://127.0.0.1:{page_port(station)}"
    inspection = wait_until(lambda: json.loads(fetch(url + "/api/inspections?verdict=anomalous")[2])["inspections"],
                            30, "an inspection")[0]["id"]
    filler = fill_disk(small_state)
    status, _, body = fetch(f"{url}/api/inspections/{inspection}/review", "POST", BEARER, {"verdict": "normal"})
    assert status in (503, 507) and "review" in json.loads(body)["error"], (status, body)
    reviewed = small_state / "reviewed"
    assert not [p for p in reviewed.rglob("*") if p.is_file()] if reviewed.exists() else True
    health = wait_until(lambda: (lambda s: s if s[0] == 503 else None)(fetch(url + "/healthz")), 30,
                        "health to report the failing history")
    assert any("history" in problem for problem in json.loads(health[2])["problems"])
    filler.unlink()
    wait_until(lambda: fetch(url + "/healthz")[0] == 200, 30, "health to recover once the disk has room")
    status, _, body = fetch(f"{url}/api/inspections/{inspection}/review", "POST", BEARER, {"verdict": "normal"})
    assert status == 200, body
    filed = list((reviewed / "cam" / "normal").glob(f"{inspection}.*"))
    assert filed and filed[0].stat().st_size > 1000
    assert station.stop() == 0


def test_attack11_update_scores_what_it_adds_and_keeps_the_runtime_limits(board_model, boards, tmp_path, capsys):
    from edge_anomaly.cli import main

    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    for path in list_images(boards / "train" / "good")[:3]:
        shutil.copyfile(path, reviewed / f"good-{path.name}")
    broken = [path for defect in ("foreign_object", "blur") for path in list_images(boards / "test" / defect)]
    for path in broken:
        shutil.copyfile(path, reviewed / f"{path.parent.name}-{path.name}")
    out = tmp_path / "updated"
    capsys.readouterr()
    assert main(["update", str(board_model[0]), "--add", str(reviewed), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "--force" in message and all(f"{p.parent.name}-{p.name}" in message for p in broken), message
    assert "good-" not in message and not out.exists()
    assert main(["update", str(board_model[0]), "--add", str(reviewed), "--out", str(out), "--force"]) == 0
    forced = json.loads((out / "model.json").read_text())["info"]["updates"][-1]["forced"]
    assert len(forced) == len(broken) and "--force" in capsys.readouterr().out
    shutil.rmtree(out)

    for path in broken:
        (reviewed / f"{path.parent.name}-{path.name}").unlink()
    outside = tmp_path / "outside.png"
    shutil.copyfile(list_images(boards / "train" / "good")[5], outside)
    (reviewed / "link.png").symlink_to(outside)
    from test_faults import _png_header_bomb

    _png_header_bomb(reviewed / "bomb.png")
    assert main(["update", str(board_model[0]), "--add", str(reviewed), "--out", str(out), "--force"]) == 2
    message = capsys.readouterr().err
    assert "link.png" in message and "symbolic link" in message and "bomb.png" in message and "MP" in message
    assert not out.exists()
