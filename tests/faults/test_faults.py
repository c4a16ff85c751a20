"""The station's fault suite: each numbered fault of issue 12, reproduced against a real mosquitto and a real
station process, asserting what must hold now (exit codes, answers on the wire, no secret anywhere).

Stations here are small (one or two cameras on the generated board bundle) so the suite stays fast.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from runtime.image_io import list_images
from tests.harness.station import STATION, copy_images, fill_disk, free_port, station_config, wait_until

pytestmark = pytest.mark.slow  # the station's fault suite: not in -m "not slow"


def _replay(folder: Path) -> dict:
    return {"kind": "images", "path": str(folder), "reopen": {"min_s": 0.2, "max_s": 0.5}}


def _trigger_camera(bundle: Path, frames: Path, **settings) -> dict:
    return {"name": "trig", "bundle": str(bundle), "mode": "trigger", "source": _replay(frames), **settings}


def _frames(boards: Path, folder: Path, count: int = 3) -> Path:
    copy_images(list_images(boards / "test" / "good")[:count], folder)
    return folder


def _rehashed(source: Path, target: Path, **changes) -> Path:
    """A copy of a bundle with manifest changes and (as an attacker would) a manifest that still checks out."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.pop("signature", None)
    manifest.update(changes)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- 1. anyone on the broker could swap a camera's model -------------------------------------------------------

def test_fault1_reload_takes_only_trusted_signed_bundles_from_bundles_dir(
        broker, probe, stations, signed_bundles, keys, boards, tmp_path):
    from runtime.signing import load_private_key, sign_bundle

    ours, theirs = keys["ours"][2], keys["theirs"][2]
    drop = tmp_path / "drop"
    drop.mkdir()
    bundles = tmp_path / "bundles"
    shutil.copytree(signed_bundles, bundles)
    cameras = [_trigger_camera(bundles / "boards", _frames(boards, tmp_path / "frames")),
               {"name": "ftp", "bundle": str(bundles / "boards"), "mode": "folder", "watch": {"path": str(drop)}}]
    config = station_config(broker.port, cameras, trust=[str(keys["ours"][1])], bundles_dir=str(bundles))
    station = stations(config)
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")

    blind = _rehashed(bundles / "boards", bundles / "blind", scoring={
        **json.loads((bundles / "boards" / "manifest.json").read_text())["scoring"], "threshold_note": "1e9"})
    foreign = _rehashed(bundles / "boards", bundles / "foreign", name="foreign")
    sign_bundle(foreign, load_private_key(keys["theirs"][0]))
    dropped = shutil.copytree(bundles / "boards", drop / "evil-bundle")
    (bundles / "escape").symlink_to(tmp_path / "frames")
    attempts = {
        str(blind): f"bundle is unsigned; this station only runs bundles signed by key(s) {ours}",
        str(foreign): f"signed by key {theirs}, which this station does not trust",
        str(dropped): "lies in the watched drop folder",
        str(bundles / "escape" / "x"): "is outside bundles_dir",
        "/etc": "is outside bundles_dir",
    }
    for path in attempts:
        probe.publish("cmd/reload", {"camera": "trig", "bundle": path})
    for path, fragment in attempts.items():
        error = probe.wait_for("/cmd/error", lambda d, path=path: d["command"] == "reload" and (
            d.get("bundle") == path or repr(path) in d["error"] or json.dumps(path) in d.get("payload", "")))[0].data
        assert fragment in error["error"], error

    good = _rehashed(bundles / "boards", bundles / "boards-v2", name="boards-v2")
    sign_bundle(good, load_private_key(keys["ours"][0]))
    probe.publish("cmd/reload", {"camera": "trig", "bundle": "boards-v2"})  # relative to bundles_dir
    probe.wait_for("/status", lambda d: d["cameras"]["trig"]["bundle"]["name"] == "boards-v2")
    assert station.stop() == 0

    config["cameras"] = [_trigger_camera(blind, tmp_path / "frames")]  # an unsigned bundle at start
    refused = stations(config, name="refused")
    assert refused.wait() == 2
    assert f"bundle is unsigned; this station only runs bundles signed by key(s) {ours}" in refused.log


# -- 2. a brief disk-full killed the sender for good ---------------------------------------------------------

@pytest.fixture
def small_disk(tmpfs):
    """A small tmpfs: the outbox's filesystem, to be filled and freed (64 MB: the running bundle's verified copy
    lies in the state folder too)."""
    return tmpfs("64m")


def test_fault2_disk_full_holds_and_retries_and_delivery_resumes_with_nothing_lost(
        broker, probe, stations, board_bundle, boards, small_disk, tmp_path):
    frames = _frames(boards, tmp_path / "frames", 4)
    camera = {"name": "cont", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 8,
              "source": _replay(frames)}
    port = free_port()
    config = station_config(broker.port, [camera], state_dir=str(small_disk), evidence={"save": "none"},
                            http={"enabled": True, "port": port})
    station = stations(config)
    probe.wait_for("/cont/result", count=3)
    filler = fill_disk(small_disk)
    status, health = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(_health(port)), 20,
                                "health to turn red on the full disk")
    assert any("cannot be written" in problem and "held in memory" in problem for problem in health["problems"])
    assert health["outbox_write_failures"] >= 1
    time.sleep(1.0)
    filler.unlink()
    wait_until(lambda: _health(port)[0] == 200, 20, "health to turn green once the disk has room")
    assert station.stop() == 0
    final = probe.wait_for("/heartbeat", lambda d: d["cameras"]["cont"]["state"] == "stopped")[0].data
    wait_until(lambda: len({m.data["id"] for m in probe.on("/cont/result")}) == final["frames"], 15, "every result")
    seqs = sorted({m.data["seq"] for m in probe.on("/cont/result")})
    assert seqs == list(range(1, len(seqs) + 1))  # none lost, none twice
    assert "Exception in thread" not in station.log


# -- 3. a decompression bomb crash-looped the station ---------------------------------------------------------

def _png_header_bomb(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG declaring width x height with a small zlib stream of zeros (what a real bomb is, cut short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10**6))
                     + chunk(b"IEND", b""))


def test_fault3_an_image_bomb_is_refused_from_its_header_and_set_aside(broker, probe, stations, board_bundle,
                                                                      boards, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    camera = {"name": "ftp", "bundle": str(board_bundle[0]), "mode": "folder",
              "watch": {"path": str(drop), "poll_s": 0.2, "settle_s": 0.3}}
    station = stations(station_config(broker.port, [camera]))
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["ftp"]["state"] == "ok")
    _png_header_bomb(drop / "bomb.png")
    wait_until(lambda: (drop / "failed" / "bomb.png").is_file(), 15, "the bomb to be set aside")
    reason = (drop / "failed" / "bomb.png.reason.txt").read_text()
    assert "20000x20000 = 400.0 MP exceeds the limit of 50.0 MP" in reason
    shutil.copyfile(boards / "test" / "good" / "000.png", drop / "after.png")
    assert probe.wait_for("/ftp/result")[0].data["source"] == "after.png"
    assert station.stop() == 0


# -- 4. no .tar bundle loaded on Debian 12's Python 3.11.2 ---------------------------------------------------

def test_fault4_tar_bundles_load_without_tarfile_filters(board_bundle, monkeypatch):
    import tarfile as tarfile_module

    from runtime.bundle import open_bundle

    monkeypatch.delattr(tarfile_module, "data_filter", raising=False)  # as on 3.11.2 / 3.10.x
    monkeypatch.setattr(tarfile_module.TarFile, "extractall", None)  # and no extractall at all
    assert open_bundle(board_bundle[1]).manifest.files


# -- 5. SIGTERM after a reload crashed (exit 139) ---------------------------------------------------------------

def test_fault5_sigterm_after_reloads_exits_cleanly(broker, probe, stations, board_bundle, board_exports, boards,
                                                   tmp_path):
    openvino = board_exports("openvino")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for name, source in (("onnx", board_bundle[0]), ("openvino", openvino)):
        shutil.copytree(source, bundles / name)
    camera = _trigger_camera(bundles / "openvino", _frames(boards, tmp_path / "frames"))
    station = stations(station_config(broker.port, [camera]))
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")
    for name in ("onnx", "openvino"):
        probe.publish("cmd/reload", {"bundle": str(bundles / name)})
        probe.wait_for("/status", lambda d, name=name: d["cameras"]["trig"]["bundle"]["path"] == str(bundles / name))
    probe.publish("cmd/inspect", {"part_id": "after-reloads"})
    probe.wait_for("/trig/result", lambda d: d["part_id"] == "after-reloads")
    assert station.stop() == 0
    assert probe.wait_for("/status", lambda d: d["state"] == "offline")[-1].data["reason"] == "shutdown"


# -- 6. accepted triggers were lost; the queue was unbounded --------------------------------------------------

def _answers(probe) -> dict[str, list[dict]]:
    answers: dict[str, list[dict]] = {}
    for message in probe.on("/trig/result") + probe.on("/cmd/error"):
        if message.data and message.data.get("part_id"):
            answers.setdefault(message.data["part_id"], []).append(message.data)
    return answers


def _flood(probe, count: int, prefix: str) -> list[str]:
    part_ids = [f"{prefix}-{n}" for n in range(count)]
    for part_id in part_ids:
        probe.client.publish(f"plant/{STATION}/cmd/inspect", json.dumps({"part_id": part_id}), qos=1)
    return part_ids


def test_fault6_sigterm_under_a_trigger_flood_answers_every_trigger_and_busy_beyond_the_queue(
        broker, probe, stations, board_bundle, boards, tmp_path):
    queue = 16
    camera = _trigger_camera(board_bundle[0], _frames(boards, tmp_path / "frames"), trigger_queue=queue)
    station = stations(station_config(broker.port, [camera], evidence={"save": "none"}))
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")
    part_ids = _flood(probe, 300, "flood")
    # every trigger has reached the station: answered (busy beyond the queue, or inspected), or waiting in it
    wait_until(lambda: len(_answers(probe)) >= len(part_ids) - queue - 1, 60, "the flood to reach the station")
    assert station.stop() == 0
    wait_until(lambda: set(_answers(probe)) >= set(part_ids) or None, 15, "an answer for every trigger")
    answers = _answers(probe)
    assert all(len(answers[p]) == 1 for p in part_ids)  # each answered exactly once
    kinds = {p: "result" if "label" in answers[p][0] else answers[p][0]["error"].split(":")[0] for p in part_ids}
    assert "busy" in kinds.values() and "result" in kinds.values()
    assert set(kinds.values()) <= {"result", "busy", "camera trig is shutting down"}


def test_fault6_after_kill9_the_restart_names_every_accepted_unanswered_trigger(
        broker, probe, stations, board_bundle, boards, tmp_path):
    queue = 64
    camera = _trigger_camera(board_bundle[0], _frames(boards, tmp_path / "frames"), trigger_queue=queue)
    config = station_config(broker.port, [camera], evidence={"save": "none"})
    first = stations(config)
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")
    part_ids = _flood(probe, 120, "killed")
    # every trigger has reached the station (answered busy, inspected, or accepted and waiting), then kill -9
    wait_until(lambda: len(_answers(probe)) >= len(part_ids) - queue - 1, 60, "the flood to reach the station")
    first.kill9()
    second = stations(config)  # same folder: same outbox
    wait_until(lambda: set(_answers(probe)) >= set(part_ids) or None, 30, "an answer for every trigger")
    restarted = [p for p, a in _answers(probe).items() if any("before answering" in x.get("error", "") for x in a)]
    assert restarted  # named by part_id after the restart
    assert second.stop() == 0


# -- 7. resource and input limits -----------------------------------------------------------------------------

def test_fault7_hostile_commands_and_bundles_are_answered_briefly_and_change_nothing(
        broker, probe, stations, board_bundle, boards, tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(board_bundle[0], bundles / "boards")
    camera = _trigger_camera(bundles / "boards", _frames(boards, tmp_path / "frames"))
    station = stations(station_config(broker.port, [camera]))
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["trig"]["state"] == "ok")

    bomb = bundles / "bomb.tar.gz"  # a compressed tar with an unlisted big member
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("b/huge.bin")
        info.size = 50 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    oracle = _rehashed(bundles / "boards", bundles / "oracle")
    manifest = json.loads((oracle / "manifest.json").read_text())
    manifest["files"]["/etc/hostname"] = "0" * 64
    (oracle / "manifest.json").write_text(json.dumps(manifest))

    probe.publish("cmd/inspect", b'{"part_id": "' + b"A" * (2 * 2**20) + b'"}')  # 2 MB
    probe.publish("cmd/inspect", {"part_id": "T1", "camera": ["x"]})
    probe.publish("cmd/inspect", b"[" * 30000 + b"]" * 30000)  # under the size limit, too deep for json
    probe.publish("cmd/reload", {"camera": "trig", "bundle": str(bomb)})
    probe.publish("cmd/reload", {"camera": "trig", "bundle": str(oracle)})
    errors = probe.wait_for("/cmd/error", count=5)
    expected = ["exceeds the limit of 65536", "'camera' must be a camera name, got list", "nested too deeply",
                "not a plain .tar bundle", "not a plain name inside the bundle folder"]
    for fragment in expected:
        assert sum(fragment in e.data["error"] for e in errors) == 1, (fragment, [e.data["error"] for e in errors])
    assert next(e for e in errors if "got list" in e.data["error"]).data["part_id"] == "T1"
    assert not any("SHA-256" in e.data["error"] or "Traceback" in e.data["error"] for e in errors)
    assert all(len(e.raw) < 3000 for e in errors)  # never the payload echoed whole
    assert not list(Path("/tmp").glob("edge-anomaly-bundle-*/b/huge.bin"))
    probe.publish("cmd/inspect", {"part_id": "still-here"})
    probe.wait_for("/trig/result", lambda d: d["part_id"] == "still-here")
    assert station.stop() == 0


# -- 8. stream credentials on the wire ------------------------------------------------------------------------

def test_fault8_stream_credentials_never_reach_mqtt_or_logs(broker, probe, stations, board_bundle, tmp_path):
    secret = "hunter2-secret"
    url = f"rtsp://operator:{secret}@127.0.0.1:{free_port()}/stream1"
    camera = {"name": "rtsp", "bundle": str(board_bundle[0]), "mode": "trigger",
              "source": {"kind": "stream", "url": url, "reopen": {"min_s": 0.2, "max_s": 0.5}}}
    station = stations(station_config(broker.port, [camera]))
    probe.wait_for("/status", lambda d: d["state"] == "online", timeout=30)
    probe.publish("cmd/inspect", {"part_id": "P-secret"})  # the trigger opens the stream, which is not there
    error = probe.wait_for("/cmd/error", lambda d: d.get("part_id") == "P-secret", timeout=30)[0].data
    assert "rtsp://operator:***@127.0.0.1" in error["error"]
    probe.wait_for("/status", lambda d: d["cameras"]["rtsp"]["state"] == "reconnecting", timeout=30)
    assert station.stop() == 0
    wire = b"".join(m.raw for m in probe.messages)
    assert secret.encode() not in wire and b"operator:***@" in wire
    assert secret not in station.log


# -- 9. defaults that failed on a real install -----------------------------------------------------------------

def test_fault9_check_lists_every_problem_and_state_defaults_away_from_etc(board_bundle, keys, tmp_path,
                                                                           monkeypatch):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(read_only)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount(8) for a read-only filesystem")
    try:
        config = station_config(1883, [_trigger_camera(board_bundle[0], tmp_path / "frames")],
                                state_dir=str(read_only / "state"), trust=[str(keys["ours"][1])])
        config_path = tmp_path / "station.yaml"
        config_path.write_text(json.dumps(config))
        run = subprocess.run([sys.executable, "-m", "edge_anomaly", "serve", "--config", str(config_path), "--check"],
                             capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
    assert run.returncode == 2
    assert "3 problem(s)" in run.stderr  # outbox and evidence folders, and the unsigned bundle
    assert "not writable by this user" in run.stderr and "bundle is unsigned" in run.stderr

    from runtime.station.config import load_config

    monkeypatch.setenv("MQTT_PASSWORD", "read from the environment")
    example = load_config(Path(__file__).resolve().parents[2] / "devices" / "station.yaml")
    assert example.http.host == "127.0.0.1" and str(example.outbox.path).startswith("/var/lib/edge-anomaly")


# -- 10. package and unit ------------------------------------------------------------------------------------

def test_fault10_the_unit_is_hardened_to_an_exposure_of_at_most_3():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = Path(__file__).resolve().parents[2] / "devices" / "edge-anomaly.service"
    run = subprocess.run([analyze, "security", "--offline=true", "--root=/", str(unit)], capture_output=True,
                         text=True, timeout=60)
    score = float(run.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 3.0, run.stdout[-3000:]
