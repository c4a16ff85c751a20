"""A GigE Vision camera on the line: the station reads Debian's fake camera (a real GVSP stream on 127.0.0.1) in
software-trigger mode, an OPC UA client starts each inspection with StartSingleJob and gets its ResultReady; the
camera is killed (the job in hand is answered with an error, the VisionSystem goes to Error) and comes back. And a
camera whose frames all lose packets: the trigger is answered with the error after the retriggers, the camera stays."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import opcua as plc
from tests.harness.fake_camera import FakeCamera, aravis_or_skip
from tests.harness.station import Broker, DaemonProcess, Probe, free_port, patience, station_config, wait_until


@dataclass
class GigeLine:
    camera: FakeCamera
    broker: Broker
    daemon: DaemonProcess
    probe: Probe
    folder: Path
    port: int
    cert: Path
    key: Path

    async def client(self):
        return await plc.connect(f"opc.tcp://127.0.0.1:{self.port}", self.folder / "station" / "opcua" /
                                 "server-cert.der", self.cert, self.key, "mes", "gige-secret")


@pytest.fixture
def gige_line(board_bundle, tmp_path):
    """A software-triggered station on the fake GigE camera with its OPC UA server on, online."""
    aravis_or_skip()
    camera = FakeCamera().start()
    broker = Broker(tmp_path / "broker")
    broker.start()
    (tmp_path / "password").write_text("gige-secret\n")
    port = free_port()
    config = station_config(broker.port, [{
        "name": "gige", "bundle": str(board_bundle[0]), "mode": "trigger",
        "source": {"kind": "genicam", "reopen": {"min_s": 0.2, "max_s": 1},
                   "genicam": {"camera": camera.serial, "trigger": "software",
                               # a frame a second on a quiet machine; the fake camera is starved under load
                               "timeout_s": patience(1.0)}}}],
        opcua={"enabled": True, "port": port, "users": {"mes": {"file": str(tmp_path / "password")}}})
    daemon = DaemonProcess(tmp_path / "station", config)
    plc.make_station_certificate(daemon.config_path)
    cert, key = plc.make_client_certificate(tmp_path / "client", "mes")
    plc.trust(cert, tmp_path / "station" / "opcua" / "trusted")
    daemon.start()
    probe = Probe(broker.port)
    try:
        probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["gige"]["state"] == "ok",
                       timeout=60)
        wait_until(lambda: "OPC UA server on" in daemon.log, 30, "the OPC UA server")
        yield GigeLine(camera, broker, daemon, probe, tmp_path, port, cert, key)
    finally:
        _tear_down(camera, broker, daemon, probe)


def _tear_down(camera: FakeCamera, broker: Broker, daemon: DaemonProcess, probe: Probe) -> None:
    if daemon.process.poll() is None:
        daemon.kill9()
    probe.close()
    broker.stop()
    camera.kill()


def test_start_single_job_inspects_a_software_triggered_gige_frame_and_survives_the_camera_leaving(gige_line):
    async def scenario():
        client = await gige_line.client()
        try:
            station = await plc.Station.find(client, "gige")
            events = await station.subscribe_results()
            await _first_job_answers_on_both_sides(gige_line, station, events)
            await _camera_lost_and_back(gige_line, station, events)
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 150))
    assert gige_line.daemon.stop() == 0


async def _first_job_answers_on_both_sides(line: GigeLine, station, events) -> None:
    """StartSingleJob's ResultReady and the MQTT result name the same inspection of a real GigE frame."""
    job, _ = await station.start_single_job("G-1")
    event = await events.wait_for(lambda e: e.JobId.Id == job.Id)
    content = json.loads(event.ResultContent[0].Value)
    result = line.probe.wait_for("/gige/result", lambda d: d["part_id"] == "G-1")[0].data
    assert content["inspection"] == result["inspection"]
    assert isinstance(result["camera_frame"]["frame_id"], int) and result["camera_frame"]["timestamp_ns"]
    assert result["source"].startswith(f"genicam:{line.camera.serial}")


async def _camera_lost_and_back(line: GigeLine, station, events) -> None:
    """The camera killed: a job in hand is answered with an error, the VisionSystem goes to Error and refuses jobs;
    the camera back: Operational again, and a job is answered."""
    line.camera.kill()
    vision = await (await station.child("VisionStateMachine")).get_child("0:CurrentState")
    automatic = await (await station.automatic()).get_child("0:CurrentState")
    try:
        job, _ = await station.start_single_job("G-LOST")  # may be taken before the loss is seen
    except plc.ua.UaStatusCodeError:
        pass
    else:
        lost = line.probe.wait_for("/cmd/error", lambda d: d.get("part_id") == "G-LOST")[0].data
        assert "gige" in lost["error"]
    await plc.wait_async(vision.read_value, lambda v: v.Text == "Error", timeout=20)
    await plc.wait_async(automatic.read_value, lambda v: v.Text == "Ready")
    state = await (await station.child("SystemState")).read_value()
    assert state.State == plc.ua.SystemStateDataType.UDT_5 and "gige" in state.StateDescription
    with pytest.raises(plc.ua.UaStatusCodeError, match="BadInvalidState"):
        await station.start_single_job("G-WHILE-DOWN")
    line.camera.start()
    await plc.wait_async(vision.read_value, lambda v: v.Text == "Operational", timeout=30)
    job, _ = await station.start_single_job("G-2")
    await events.wait_for(lambda e: e.JobId.Id == job.Id)


def test_a_trigger_whose_frames_all_come_incomplete_is_answered_after_the_retriggers_and_the_camera_stays(
        board_bundle, tmp_path):
    """Half of the GVSP packets lost: no frame completes. The trigger is answered on cmd/error naming the camera once
    the 2 retriggers came incomplete too (not 'camera lost' after timeout_s), nothing is inspected, the 3 incomplete
    frames are counted in the heartbeat, and the camera stays ok (not reopened)."""
    aravis_or_skip()
    camera = FakeCamera(lost_per_thousand=500).start()
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = station_config(broker.port, [{
        "name": "gige", "bundle": str(board_bundle[0]), "mode": "trigger",
        "source": {"kind": "genicam", "genicam": {"camera": camera.serial, "trigger": "software",
                                                  "timeout_s": patience(5.0)}}}])
    daemon = DaemonProcess(tmp_path / "station", config).start()
    probe = Probe(broker.port)
    try:
        probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["gige"]["state"] == "ok",
                       timeout=60)
        probe.publish("cmd/inspect", {"part_id": "G-LOSSY", "camera": "gige"})
        error = probe.wait_for("/cmd/error", lambda d: d.get("part_id") == "G-LOSSY")[0].data
        assert error["camera"] == "gige"
        assert error["error"].startswith(f"bad frame: genicam:{camera.serial}: no complete frame after 2 retrigger(s): "
                                         f"3 in a row incomplete (Aravis status "), error["error"]
        beat = probe.wait_for("/heartbeat", lambda d: d["cameras"]["gige"]["errors"] >= 1)[0].data["cameras"]["gige"]
        assert (beat["state"], beat["frames"], beat["errors"], beat["corrupt_frames"]) == ("ok", 0, 1, 3)
        assert not probe.on("/gige/result")
        assert daemon.stop() == 0
        assert "reconnecting" not in daemon.log and daemon.log.count("incomplete: Aravis status") == 3
    finally:
        _tear_down(camera, broker, daemon, probe)
