"""The station's OPC UA server for real: ``edge-anomaly serve`` as a subprocess, a real mosquitto, asyncua's client
over TCP on loopback with Basic256Sha256 sign-and-encrypt and a user, as a PLC or MES would connect.

The tests share one station (one trigger camera replaying board images) and run in file order; the last one stops
the broker and checks that OPC UA keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.detector import Detector
from runtime.image_io import read_image
from tests.harness.opcua import (
    Client,
    Station,
    connect,
    make_client_certificate,
    make_station_certificate,
    trust,
    ua,
    wait_async,
)
from tests.harness.station import (
    Broker,
    DaemonProcess,
    Probe,
    StationLine,
    copy_images,
    fetch,
    free_port,
    station_config,
    wait_until,
)

PASSWORD = "plc-secret-1"


@dataclass
class Line(StationLine):
    endpoint: str
    server_cert: Path
    cert: Path
    key: Path
    untrusted: tuple[Path, Path]
    images: list[Path]
    bundle: Path
    other_bundle: Path

    async def client(self, **changes):
        settings = {"cert": self.cert, "key": self.key, "user": "plc", "password": PASSWORD} | changes
        return await connect(self.endpoint, self.server_cert, **settings)

    @contextlib.asynccontextmanager
    async def camera(self):
        """The camera's VisionSystem through a session of its own, closed after the block."""
        client = await self.client()
        try:
            yield await Station.find(client, "cam")
        finally:
            await client.disconnect()


@pytest.fixture(scope="module")
def line(board_bundle, boards, tmp_path_factory):
    root = tmp_path_factory.mktemp("opcua")
    bundles = root / "bundles"
    bundle = Path(shutil.copytree(board_bundle[0], bundles / "boards"))
    other = Path(shutil.copytree(board_bundle[0], bundles / "boards-v2"))
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "name": "boards-v2"}))
    test = boards / "test"
    images = copy_images([test / "good" / "000.png", test / "missing_component" / "000.png"], root / "frames")
    # persistent, with a durable probe: after the broker-down test restarts it, a result the station's outbox
    # delivers before the probe has reconnected waits for the probe instead of being lost (a race, seen under load)
    broker = Broker(root / "broker", persistence=True)
    broker.start()
    (root / "plc.password").write_text(PASSWORD + "\n")
    port = free_port()
    config = station_config(broker.port, [{"name": "cam", "bundle": str(bundle), "mode": "trigger",
                                            "source": {"kind": "images", "path": str(root / "frames")}}],
                            bundles_dir=str(bundles), http={"enabled": True, "port": 0},
                            opcua={"enabled": True, "port": port, "max_calls_per_s": 200,
                                   "users": {"plc": {"file": str(root / "plc.password")}}})
    daemon = DaemonProcess(root / "station", config)
    make_station_certificate(daemon.config_path)
    cert, key = make_client_certificate(root / "client", "plc")
    trust(cert, root / "station" / "opcua" / "trusted")
    untrusted = make_client_certificate(root / "stranger", "stranger")
    daemon.start()
    probe = Probe(broker.port, client_id="opcua-line-probe", durable=True)
    probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["cam"]["state"] == "ok", timeout=60)
    wait_until(lambda: "OPC UA server on" in daemon.log, 30, "the OPC UA server to start")
    yield Line(broker, daemon, probe, root, f"opc.tcp://127.0.0.1:{port}", root / "station" / "opcua" /
               "server-cert.der", cert, key, untrusted, images, bundle, other)
    if daemon.process.poll() is None:
        daemon.kill9()
    probe.close()
    broker.stop()


@pytest.fixture(scope="module")
def expected(line):
    detector = Detector.load(line.bundle)
    return {path.name: detector.predict([read_image(path)])[0] for path in line.images}


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario, 120))


def test_a_generic_client_finds_the_machine_vision_types_and_states(line):
    async def scenario():
        async with line.camera() as station:
            assert await station.system.read_type_definition() == ua.NodeId(1003, station.mv)
            names = {(await c.read_browse_name()).to_string() for c in await station.system.get_children()}
            assert {f"{station.mv}:{n}" for n in ("VisionStateMachine", "RecipeManagement", "ResultManagement",
                                                  "ConfigurationManagement", "SafetyStateManagement",
                                                  "SystemState")} <= names
            machine = await station.child("VisionStateMachine")
            assert await machine.read_type_definition() == ua.NodeId(1017, station.mv)
            automatic = await station.automatic()
            assert await automatic.read_type_definition() == ua.NodeId(1021, station.mv)
            current = await machine.get_child("0:CurrentState")
            await wait_async(current.read_value, lambda v: v.Text == "Operational")  # the camera is up
            assert await (await current.get_child("0:Id")).read_value() == ua.NodeId(5031, station.mv)
            auto_current = await automatic.get_child("0:CurrentState")
            assert (await auto_current.read_value()).Text == "Ready"
            assert await (await auto_current.get_child("0:Id")).read_value() == ua.NodeId(5057, station.mv)
            methods = {(await m.read_browse_name()).Name for m in await automatic.get_methods()}
            assert {"StartSingleJob", "StartContinuous", "Stop", "Abort"} <= methods
            state = await (await station.child("SystemState")).read_value()
            assert state.State == ua.SystemStateDataType.PRD_1
            ready_type = station.client.get_node(ua.NodeId(1024, station.mv))
            assert (await ready_type.read_browse_name()).Name == "ResultReadyEventType"
            fields = {(await p.read_browse_name()).Name for p in await ready_type.get_properties()}
            assert {"ResultId", "IsPartial", "ResultState", "PartId", "ProductId", "CreationTime", "ProcessingTimes",
                    "ResultContent", "JobId"} <= fields

    run(scenario())


def test_start_single_job_answers_with_result_ready_like_the_mqtt_result(line, expected):
    async def scenario():
        async with line.camera() as station:
            events = await station.subscribe_results()
            answers = []
            for n in range(2):
                job_id, error = await station.start_single_job(f"OPC-{n}")
                assert error == 0
                event = await events.wait_for(lambda e, n=n: e.PartId is not None and e.PartId.Id == f"OPC-{n}")
                assert event.JobId.Id == job_id.Id
                answers.append(event)
                # the job is over: the automatic machine is Ready again for the next StartSingleJob
                auto_current = await (await station.automatic()).get_child("0:CurrentState")
                await wait_async(auto_current.read_value, lambda v: v.Text == "Ready")
            by_part = {}
            for event in answers:
                content = json.loads(event.ResultContent[0].Value)
                assert event.ResultState == 1 and event.IsPartial is False
                assert event.ProcessingTimes.EndTime >= event.ProcessingTimes.StartTime
                by_part[event.PartId.Id] = content
            mqtt = {m.data["part_id"]: m.data for m in line.probe.wait_for(
                "/cam/result", lambda d: d["part_id"] in by_part, count=2)}
            for part_id, content in by_part.items():
                assert content["inspection"] == mqtt[part_id]["inspection"]  # the same inspection, both ways
                assert content["label"] == mqtt[part_id]["label"]
                assert content["score"] == pytest.approx(mqtt[part_id]["score"])
            for content in by_part.values():  # the evidence link leads to the same inspection on the station's page
                status, _, body = fetch(content["evidence_url"])
                assert status == 200 and json.loads(body)["id"] == content["inspection"]
            wanted = {line.images[0].name: by_part["OPC-0"], line.images[1].name: by_part["OPC-1"]}
            assert {expected[name].label for name in wanted} == {"normal", "anomalous"}
            for name, content in wanted.items():
                assert content["label"] == expected[name].label
                assert content["ok"] is (expected[name].label == "normal")
                assert content["score"] == pytest.approx(expected[name].score, rel=1e-4)
            results = await station.child("ResultManagement")
            first = answers[0]
            _, result, error = await results.call_method(f"{station.mv}:GetResultById", first.ResultId, 1000)
            assert error == 0 and result.PartId.Id == "OPC-0" and result.JobId.Id == first.JobId.Id
            listed = await results.call_method(
                f"{station.mv}:GetResultListFiltered", ua.Variant(0, ua.VariantType.Int32), ua.MeasIdDataType(),
                ua.PartIdDataType(Id="OPC-1"), ua.RecipeIdExternalDataType(), ua.RecipeIdInternalDataType(),
                ua.ConfigurationIdDataType(), ua.ConfigurationIdDataType(), ua.ProductIdDataType(),
                ua.JobIdDataType(), ua.Variant(10, ua.VariantType.UInt32), ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(1000, ua.VariantType.Int32))
            complete, count, _, found, error = listed
            assert complete and count == 1 and found[0].ResultId.Id == answers[1].ResultId.Id
            with pytest.raises(ua.UaStatusCodeError, match="BadNotFound"):
                await results.call_method(f"{station.mv}:GetResultById", ua.ResultIdDataType(Id="nope"), 0)
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                await station.start_single_job("")  # a part id is required, as for cmd/inspect

    run(scenario())


def test_the_plc_handshake_answers_each_trigger_once(line):
    async def scenario():
        async with line.camera() as station:
            nodes = {name: await station.handshake(name) for name in (
                "PartId", "Trigger", "Acknowledge", "Busy", "ResultReady", "ResultOk", "Score", "Kind",
                "ResultPartId", "ResultId", "ErrorCode", "Heartbeat")}
            beat = await nodes["Heartbeat"].read_value()
            for n in range(2):
                await nodes["PartId"].write_value(ua.Variant(f"HS-{n}", ua.VariantType.String))
                await nodes["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):  # no second trigger meanwhile
                    await nodes["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                await wait_async(nodes["ResultReady"].read_value, bool)
                assert await nodes["Busy"].read_value() is False
                assert await nodes["ResultPartId"].read_value() == f"HS-{n}"
                assert await nodes["ErrorCode"].read_value() == 0
                result_id = await nodes["ResultId"].read_value()
                mqtt = line.probe.wait_for("/cam/result", lambda d, n=n: d["part_id"] == f"HS-{n}")[0].data
                assert mqtt["inspection"] == result_id
                assert (await nodes["ResultOk"].read_value()) is (mqtt["label"] == "normal")
                assert await nodes["Score"].read_value() == pytest.approx(mqtt["score"])
                await nodes["Trigger"].write_value(ua.Variant(False, ua.VariantType.Boolean))
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):  # not before the acknowledge
                    await nodes["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                await nodes["Acknowledge"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                await wait_async(nodes["ResultReady"].read_value, lambda v: v is False)
                await nodes["Acknowledge"].write_value(ua.Variant(False, ua.VariantType.Boolean))
            results = line.probe.on("/cam/result")
            assert len(results) == len({m.data["inspection"] for m in results})  # none answered twice
            assert len([m for m in results if m.data["part_id"].startswith("HS-")]) == 2
            await wait_async(nodes["Heartbeat"].read_value, lambda v: v > beat)
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied|BadNotWritable"):  # the station's
                await nodes["Busy"].write_value(ua.Variant(True, ua.VariantType.Boolean))

    run(scenario())


def test_anonymous_wrong_password_untrusted_and_plain_clients_are_refused(line):
    async def refused(pattern: str, **changes):
        with pytest.raises(Exception) as caught:
            client = await line.client(**changes)
            await client.disconnect()
        assert pattern in f"{type(caught.value).__name__} {caught.value}", caught.value

    async def scenario():
        await refused("BadIdentityToken", user=None, password=None)  # anonymous: no such token is offered
        await refused("BadUserAccessDenied", password="guess")
        stranger_cert, stranger_key = line.untrusted
        await refused("BadCertificateUntrusted", cert=stranger_cert, key=stranger_key)
        plain = Client(line.endpoint, timeout=10)  # a secure channel without security, past the client's own check
        await plain.connect_socket()
        try:
            await plain.send_hello()
            await plain.open_secure_channel()  # allowed, for GetEndpoints: discovery needs no security
            endpoints = await plain.get_endpoints()
            assert {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in endpoints} == {
                ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
            params = ua.CreateSessionParameters(
                ClientDescription=ua.ApplicationDescription(ApplicationUri="urn:x",
                                                            ApplicationType=ua.ApplicationType.Client),
                EndpointUrl=line.endpoint, SessionName="plain", ClientNonce=b"0" * 32, RequestedSessionTimeout=60000)
            await plain.uaclient.create_session(params)  # asyncua allows this much on an unsecured channel
            token = ua.UserNameIdentityToken(PolicyId="username", UserName="plc", Password=PASSWORD.encode())
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):  # but no session comes alive
                await plain.uaclient.activate_session(ua.ActivateSessionParameters(UserIdentityToken=token))
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied|BadSessionNotActivated"):
                await plain.nodes.server_state.read_value()
        finally:
            plain.disconnect_socket()

    run(scenario())


def test_prepare_recipe_is_a_reload_refused_as_cmd_reload_refuses(line):
    async def scenario():
        async with line.camera() as station:
            recipes = await station.child("RecipeManagement")
            listed = await recipes.call_method(
                f"{station.mv}:GetRecipeListFiltered", ua.RecipeIdExternalDataType(), ua.ProductIdDataType(),
                ua.Variant(2, ua.VariantType.Int32), ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(0, ua.VariantType.UInt32), ua.Variant(0, ua.VariantType.Int32))
            names = {recipe.Id for recipe in listed[3]}
            assert names == {"boards", "boards-v2"}
            outside = line.root / "frames"
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                await recipes.call_method(f"{station.mv}:PrepareRecipe",
                                          ua.RecipeIdExternalDataType(Id=str(outside)), ua.RecipeIdInternalDataType())
            refusal = line.probe.wait_for("/cmd/error", lambda d: d["command"] == "reload")[0].data
            assert "outside bundles_dir" in refusal["error"]

            events = await station.subscribe_results()
            job, _ = await station.start_single_job("RELOAD-0")  # a job in flight while the recipe changes
            out, completed, error = await recipes.call_method(
                f"{station.mv}:PrepareRecipe", ua.RecipeIdExternalDataType(Id="boards-v2"),
                ua.RecipeIdInternalDataType())
            assert completed and error == 0 and out.Id == "boards-v2" and out.Version == "boards-v2"
            during = await events.wait_for(lambda e: e.JobId.Id == job.Id)
            old_name = json.loads((line.bundle / "manifest.json").read_text())["name"]  # the job ran on one whole
            assert json.loads(during.ResultContent[0].Value)["bundle"]["name"] in (old_name, "boards-v2")  # bundle
            auto_current = await (await station.automatic()).get_child("0:CurrentState")
            await wait_async(auto_current.read_value, lambda v: v.Text == "Ready")
            job, _ = await station.start_single_job("RELOAD-1", recipe="boards-v2")
            after = await events.wait_for(lambda e: e.JobId.Id == job.Id)
            assert json.loads(after.ResultContent[0].Value)["bundle"]["name"] == "boards-v2"
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):  # not the prepared recipe
                await station.start_single_job("RELOAD-2", recipe="boards")
            status = line.probe.wait_for("/status", lambda d: d["cameras"]["cam"]["bundle"]["name"] == "boards-v2")
            assert status

    run(scenario())


def test_opcua_keeps_working_while_the_broker_is_down(line):
    line.broker.stop()

    async def scenario():
        async with line.camera() as station:
            events = await station.subscribe_results()
            job, error = await station.start_single_job("NO-BROKER")
            assert error == 0
            event = await events.wait_for(lambda e: e.JobId.Id == job.Id)
            assert event.PartId.Id == "NO-BROKER"
            system_state = await station.child("SystemState")
            state = await wait_async(system_state.read_value, lambda v: "broker" in (v.StateDescription or ""))
            assert state.State == ua.SystemStateDataType.PRD_1  # the camera produces; only MQTT is away

    run(scenario())
    line.broker.start()
    # the result made while the broker was away reaches MQTT from the outbox
    line.probe.wait_for("/cam/result", lambda d: d["part_id"] == "NO-BROKER", timeout=30)
    assert line.daemon.stop() == 0
