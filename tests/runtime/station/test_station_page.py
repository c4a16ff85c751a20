"""The station's page and its API over HTTPS: a real station (subprocess) on a real mosquitto, fed by an image folder.

The tests of the first part share one running station and run in file order; the last of them stops
it with SIGTERM while a page holds its event stream open. The history store, the evidence's raw
frames and the access checks are also tested on their own.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import sqlite3
import ssl
import tarfile
import threading
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.image_io import read_image
from runtime.result import Result
from runtime.station.access import Access, cross_site
from runtime.station.evidence import EvidenceStore, frame_path
from runtime.station.history import History
from runtime.station.messages import BundleInfo, Inspection
from tests.harness.station import (
    STATION,
    Broker,
    DaemonProcess,
    Probe,
    fetch,
    make_certificates,
    page_camera,
    page_port,
    station_config,
    wait_until,
)

pytestmark = pytest.mark.slow  # the station as a subprocess, a real broker: not in -m "not slow"

TOKEN = "line-1-review-token"
PASSWORD = "anna's password"


@dataclass
class PageStation:
    broker: Broker
    daemon: DaemonProcess
    probe: Probe
    url: str
    context: ssl.SSLContext
    state: Path

    def get(self, path: str, **options) -> tuple[int, object, bytes]:
        return fetch(self.url + path, context=self.context, **options)

    def json(self, path: str) -> dict:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def review(self, inspection: str, body: dict | bytes, headers: dict | None = None):
        return fetch(f"{self.url}/api/inspections/{inspection}/review", "POST", headers, body, self.context)


@pytest.fixture(scope="module")
def page(board_bundle, boards, tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    broker = Broker(root / "broker")
    broker.start()
    camera = page_camera(boards, board_bundle[0], root / "frames")
    certificates = make_certificates(root / "certificates")
    (root / "token").write_text(TOKEN + "\n")
    config = station_config(broker.port, [camera], http={
        "enabled": True, "port": 0, "token": {"file": str(root / "token")}, "users": {"anna": {"env": "ANNA_PW"}},
        "tls": {"cert": str(certificates["server_cert"]), "key": str(certificates["server_key"])}})
    daemon = DaemonProcess(root / "station", config, env={"ANNA_PW": PASSWORD}).start()
    probe = Probe(broker.port)
    context = ssl.create_default_context(cafile=str(certificates["ca"]))
    station = PageStation(broker, daemon, probe, f"https://127.0.0.1:{page_port(daemon)}", context, root / "station")
    probe.wait_for("/cam/alert", timeout=30)
    yield station
    if daemon.process.poll() is None:
        daemon.kill9()
    probe.close()
    broker.stop()


def test_the_page_status_health_and_metrics_answer_without_login_over_https(page):
    status, headers, body = page.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"/static/app.js" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    for asset in ("/static/app.js", "/static/app.css"):
        assert page.get(asset)[0] == 200
    data = page.json("/api/status")
    assert data["station"] == STATION and data["healthy"] and data["mqtt"]["connected"]
    camera = data["cameras"]["cam"]
    assert camera["state"] == "ok" and camera["frames"] >= 2 and camera["anomalies"] >= 1
    assert camera["latency_ms"]["p50"] > 0 and camera["bundle"]["hash"] and camera["threshold"] > 0
    assert camera["signature"] == {"signed": False, "key_id": None, "verified": False}
    assert data["review"] == {"enabled": True, "methods": ["token", "password"]}
    assert 0 < data["evidence"]["bytes"] <= data["evidence"]["max_bytes"] and data["evidence"]["disk_free_bytes"] > 0
    health = page.json("/healthz")
    assert health["status"] == "ok" and health["cameras"] == {"cam": "ok"} and health["problems"] == []
    status, _, metrics = page.get("/metrics")
    assert status == 200 and b'edge_anomaly_frames_total{camera="cam"}' in metrics


def test_inspections_are_listed_filtered_and_open_their_evidence(page):
    anomalous = wait_until(lambda: page.json("/api/inspections?verdict=anomalous")["inspections"], 20,
                           "an anomalous inspection in the history")
    assert all(item["label"] == "anomalous" and item["camera"] == "cam" for item in anomalous)
    item = page.json(f"/api/inspections/{anomalous[0]['id']}")
    assert item["regions"] and item["bundle_hash"] and item["normalized_score"] > 0.5 and item["reviews"] == []
    assert "overlay" not in item and item["links"]["overlay"].startswith("/evidence/cam/")
    status, headers, raw = page.get(item["links"]["frame"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    frame = cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    error = np.abs(frame.astype(int) - read_image(item["source"]))  # the raw frame, no overlay: fit to retrain on
    assert frame.shape == read_image(item["source"]).shape and error.mean() < 4 and error.max() < 60
    status, headers, thumbnail = page.get(item["links"]["thumbnail"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert max(cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_COLOR).shape[:2]) <= 160
    normal = page.json("/api/inspections?verdict=normal&camera=cam")["inspections"]
    assert normal and all(i["label"] == "normal" and i["links"]["overlay"] is None for i in normal)
    assert page.json(f"/api/inspections?since={time.time() + 60}")["inspections"] == []
    assert page.json("/api/inspections?camera=nothere")["inspections"] == []
    assert page.json("/api/inspections?kind=local&limit=2")["inspections"][0]["kind"] == "local"
    assert page.get("/api/inspections?verdict=maybe")[0] == 400
    assert page.get("/api/inspections?since=yesterday")[0] == 400
    assert page.get("/api/inspections/0123abc")[0] == 404
    chart = page.json("/api/scores?camera=cam&hours=1")
    assert chart["threshold"] == 0.5 and sum(p["count"] for p in chart["points"]) >= 2
    assert any(p["max"] > 0.5 and p["anomalies"] for p in chart["points"])
    status, headers, live = page.get("/api/cameras/cam/live.jpg")
    assert status == 200 and cv2.imdecode(np.frombuffer(live, np.uint8), cv2.IMREAD_COLOR) is not None
    assert page.get("/api/cameras/other/live.jpg")[0] == 404


def test_evidence_is_served_from_its_folder_only(page):
    secret = page.state / "station.yaml"
    (page.state / "evidence" / "cam" / "escape.jpg").symlink_to(secret)
    host = page.url.split("//")[1]
    for path in ("/evidence/../station.yaml", "/evidence/..%2Fstation.yaml", "/evidence/%2e%2e/station.yaml",
                 "/evidence/cam/../../station.yaml", f"/evidence/{secret}", "/evidence//etc/passwd",
                 "/evidence/cam/escape.jpg", "/evidence/../history.sqlite"):
        connection = __import__("http.client").client.HTTPSConnection(host, context=page.context, timeout=5)
        connection.request("GET", path)  # sent as written: no client-side normalisation of ".."
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status in (404, 400), (path, response.status)
        assert b"station" not in body and b"cameras" not in body


def test_a_review_needs_a_login_is_published_stored_and_files_the_frame(page):
    item = page.json("/api/inspections?verdict=anomalous&limit=1")["inspections"][0]
    inspection = item["id"]
    token = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, _ = page.review(inspection, {"verdict": "normal"})
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert page.review(inspection, {"verdict": "normal"}, {"Authorization": "Bearer guess"})[0] == 401
    cross = {**token, "Origin": "https://evil.example"}
    assert page.review(inspection, {"verdict": "normal"}, cross)[0] == 403
    assert page.review(inspection, {"verdict": "normal"}, {**token, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert page.review(inspection, b'{"verdict": "normal"}', {**token, "Content-Type": "text/plain"})[0] == 415
    huge = {"verdict": "normal", "note": "x" * 10000}
    assert page.review(inspection, huge, token)[0] == 413
    assert page.review(inspection, {"verdict": "maybe"}, token)[0] == 400
    assert page.review("f" * 32, {"verdict": "normal"}, token)[0] == 404
    assert not page.probe.on("/cam/review")  # nothing refused reached the wire

    same_site = {**token, "Origin": page.url}
    status, _, body = page.review(inspection, {"verdict": "normal", "reviewer": "Ines", "note": "glare"}, same_site)
    assert status == 200, body
    message = page.probe.wait_for("/cam/review", lambda d: d["inspection"] == inspection)[0]
    assert message.topic == f"plant/{STATION}/cam/review"
    review = message.data
    assert review["verdict"] == "normal" and review["reviewer"] == "Ines (token)" and review["note"] == "glare"
    assert review["station_verdict"]["label"] == "anomalous" and review["bundle"]["hash"] == item["bundle_hash"]
    filed = page.state / "reviewed" / "cam" / "normal" / f"{inspection}.jpg"
    assert review["frame"] == str(filed)
    evidence_frame = frame_path(page.state / "evidence" / item["links"]["overlay"].removeprefix("/evidence/"))
    assert filed.read_bytes() == evidence_frame.read_bytes()
    assert TOKEN not in page.daemon.log and PASSWORD not in page.daemon.log

    basic = base64.b64encode(f"anna:{PASSWORD}".encode()).decode()
    status, _, body = page.review(inspection, {"verdict": "defect"}, {"Authorization": f"Basic {basic}"})
    assert status == 200 and json.loads(body)["reviewer"] == "anna"
    assert not filed.exists() and (page.state / "reviewed" / "cam" / "defect" / f"{inspection}.jpg").is_file()
    wrong = base64.b64encode(b"anna:guess").decode()
    assert page.review(inspection, {"verdict": "normal"}, {"Authorization": f"Basic {wrong}"})[0] == 401
    with closing(sqlite3.connect(page.state / "history.sqlite")) as db:
        rows = db.execute("SELECT verdict, reviewer FROM reviews WHERE inspection = ? ORDER BY row",
                          (inspection,)).fetchall()
        assert rows == [("normal", "Ines (token)"), ("defect", "anna")]
        assert db.execute("SELECT review FROM inspections WHERE id = ?", (inspection,)).fetchone() == ("defect",)
    detail = page.json(f"/api/inspections/{inspection}")
    assert [r["verdict"] for r in detail["reviews"]] == ["normal", "defect"]
    assert page.json("/api/inspections?reviewed=yes")["inspections"][0]["id"] == inspection


def test_reviewed_normals_download_as_a_tar_for_the_update_command(page):
    """The station has no torch: its reviewed normals go to the workstation as one tar, signed-in only."""
    item = page.json("/api/inspections?verdict=anomalous&limit=5")["inspections"][-1]
    token = {"Authorization": f"Bearer {TOKEN}"}
    assert page.review(item["id"], {"verdict": "normal"}, token)[0] == 200
    assert page.get("/api/reviewed/cam/normal.tar")[0] == 401
    assert page.get("/api/reviewed/cam/normal.tar", headers={**token, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert page.get("/api/reviewed/other/normal.tar", headers=token)[0] == 404
    assert page.get("/api/reviewed/cam/maybe.tar", headers=token)[0] == 404
    (page.state / "reviewed" / "cam" / "normal" / "notes.txt").write_text("not a frame")  # neither sent nor counted
    status, headers, body = page.get("/api/reviewed/cam/normal.tar", headers=token)
    assert status == 200 and headers["content-type"] == "application/x-tar"
    filed = sorted((page.state / "reviewed" / "cam" / "normal").glob("*.jpg"))
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        members = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}
    assert members == {f"cam-normal/{frame.name}": frame.read_bytes() for frame in filed}
    assert f"cam-normal/{item['id']}.jpg" in members
    assert page.json("/api/status")["cameras"]["cam"]["reviewed"]["normal"] == len(filed)
    # the temporary tar is deleted once sent: by a task that runs after the response, so give it a moment
    deadline = time.monotonic() + 10
    while list((page.state / "reviewed").glob(".download-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((page.state / "reviewed").glob(".download-*"))


def _open_events(page: PageStation, last_event_id: str | None = None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    request = urllib.request.Request(page.url + "/events", headers=headers)
    return urllib.request.urlopen(request, timeout=10, context=page.context)


def _read_events(stream, count: int, within_s: float = 10.0) -> list[dict]:
    """The next ``count`` complete events (id, event, data) of a server-sent event stream."""
    events, current, started = [], {}, time.time()
    while len(events) < count and time.time() - started < within_s:
        line = stream.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            current["id"] = line[len("id: "):]
        elif line.startswith("event: "):
            current["event"] = line[len("event: "):]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[len("data: "):])
        elif line == "" and "id" in current:
            events.append(current)
            current = {}
    return events


def test_live_events_carry_each_new_inspection(page):
    with _open_events(page) as stream:
        inspections = [event["data"] for event in _read_events(stream, 1, within_s=5) if event["event"] == "inspection"]
        assert inspections, "no inspection event within 5 s at 4 frames/s"
        data = inspections[0]
        assert data["camera"] == "cam" and data["label"] in ("normal", "anomalous")
        assert time.time() - data["queued"] < 2
        assert page.json(f"/api/inspections/{data['id']}")["id"] == data["id"]


def test_a_reconnecting_page_resumes_after_its_last_event_id(page):
    """A page that lost its connection gets what it missed, once, in order; a garbled id starts from now."""
    with _open_events(page) as stream:
        seen = _read_events(stream, 3)
    assert len(seen) == 3, "fewer than 3 events within 10 s at 4 frames/s"
    numbers = [int(event["id"].rpartition("-")[2]) for event in seen]  # <boot>-<number>
    assert numbers == sorted(set(numbers)) and len({event["id"].rpartition("-")[0] for event in seen}) == 1
    with _open_events(page, last_event_id=seen[0]["id"]) as stream:
        assert _read_events(stream, 2) == seen[1:]
    with _open_events(page, last_event_id="not-a-number") as stream:
        fresh = _read_events(stream, 1)
    assert fresh and int(fresh[0]["id"].rpartition("-")[2]) > numbers[-1]


def test_sigterm_stops_the_station_cleanly_with_a_page_open(page):
    ended = threading.Event()

    def hold_the_stream() -> None:
        with _open_events(page) as stream:
            while stream.readline():
                pass
        ended.set()

    holder = threading.Thread(target=hold_the_stream, daemon=True)
    holder.start()
    time.sleep(1.0)
    page.daemon.send(signal.SIGTERM)
    assert page.daemon.wait(timeout=20) == 0
    assert ended.wait(5), "the event stream did not end with the station"
    assert "Traceback" not in page.daemon.log


# -- the parts on their own ------------------------------------------------------------------------------------

def _inspection(number: int, started: float, label: str = "normal") -> Inspection:
    result = Result(score=0.1 * number, normalized_score=0.9 if label == "anomalous" else 0.2, label=label,
                    confidence=0.8, kind="local" if label == "anomalous" else None, heatmap=np.zeros((2, 2)))
    bundle = BundleInfo(name="b", hash="h" * 64, path="/b", edge_anomaly_version=None, created=None, threshold=1.0)
    return Inspection(id=f"i{number}", station="s", camera="cam", source="f.png", part_id=None, started=started,
                      result=result, bundle=bundle, regions=[(1, 2, 3, 4)], heatmap_path=None, total_ms=5.0)


def test_history_is_bounded_by_count_and_age_and_keeps_reviewed_inspections(tmp_path):
    history = History(tmp_path / "history.sqlite", max_inspections=100, max_days=1)
    now = time.time()
    history.record(_inspection(0, now - 3 * 86400), None)  # too old
    for number in range(1, 131):
        history.record(_inspection(number, now - 130 + number, "anomalous" if number % 10 == 0 else "normal"), None)
    assert history.flush()  # rows are written by the history's own thread
    history.add_review("i5", "cam", "normal", "anna", now, None)
    history.prune()
    kept = {row["id"] for row in history.search(limit=500)}
    assert "i0" not in kept and "i5" in kept and "i130" in kept
    assert len(kept) == 101 and {f"i{n}" for n in range(31, 131)} <= kept
    assert [row["id"] for row in history.search(label="anomalous", limit=2)] == ["i130", "i120"]
    assert history.search(reviewed=True, limit=5)[0]["review"] == "normal"
    points = history.scores("cam", now - 200, buckets=10)
    assert sum(p["count"] for p in points) == 101 and sum(p["anomalies"] for p in points) == 10
    assert max(p["max"] for p in points) == pytest.approx(0.9)
    history.close()
    reopened = History(tmp_path / "history.sqlite", max_inspections=100, max_days=1)
    assert reopened.get("i5")["reviews"][0]["reviewer"] == "anna" and reopened.get("i5")["regions"] == [[1, 2, 3, 4]]


def test_evidence_keeps_the_raw_frame_beside_the_overlay_within_the_bound(tmp_path):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    store = EvidenceStore(tmp_path, max_bytes=10**9, jpeg_quality=90)
    overlay = store.save("cam", "first", frame // 2, time.time(), frame_rgb=frame)
    assert frame_path(overlay).name == overlay.name.replace(".jpg", ".frame.jpg")
    assert np.abs(read_image(frame_path(overlay)).astype(int) - frame).mean() < np.abs(frame // 2 - frame).mean() / 4
    pair = overlay.stat().st_size + frame_path(overlay).stat().st_size
    store = EvidenceStore(tmp_path, max_bytes=int(pair * 2.5), jpeg_quality=90)  # counts the earlier pair
    assert store.total_bytes == pair
    later = [store.save("cam", f"n{n}", frame // 2, time.time() + n, frame_rgb=frame) for n in range(3)]
    files = sorted(tmp_path.rglob("*.*"))
    assert store.total_bytes <= store.max_bytes and not overlay.exists() and not frame_path(overlay).exists()
    assert frame_path(later[-1]) in files and later[-1] in files


def test_access_takes_the_token_or_a_user_and_locks_out_guessing():
    from pydantic import SecretStr

    access = Access(SecretStr("tok"), {"anna": SecretStr("pw")})
    basic = "Basic " + base64.b64encode(b"anna:pw").decode()
    assert access.identify("Bearer tok", "a") == "token" and access.identify(basic, "a") == "anna"
    for wrong in (None, "", "Bearer to", "Bearer tok2", "Basic !!!", "Basic " + base64.b64encode(b"bob:pw").decode(),
                  "Token tok"):
        assert access.identify(wrong, "b") is None
    assert not access.locked_out("b", "Bearer tok")
    for _ in range(10):
        access.identify("Bearer x", "b")
        access.identify(None, "c")  # no credentials: not a failed login
    assert access.locked_out("b", "Bearer tok") and not access.locked_out("a", "Bearer tok")
    assert not access.locked_out("b", basic) and not access.locked_out("c", "Bearer tok")  # only what was guessed
    assert not Access(None, {}).enabled and Access(None, {"u": SecretStr("p")}).methods == ["password"]
    assert cross_site({"origin": "https://station:9108"}, "station:9108") is None
    assert cross_site({}, "station:9108") is None
    assert "Origin" in cross_site({"origin": "https://evil"}, "station:9108")
    assert "Origin" in cross_site({"origin": "null"}, "station:9108")
    assert "Sec-Fetch-Site" in cross_site({"sec-fetch-site": "same-site"}, "station:9108")
