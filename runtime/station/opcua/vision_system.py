"""One camera as an OPC 40100 VisionSystem: its state machines, jobs, recipes, results and the PLC handshake.

Everything here runs on the OPC UA server's event loop. Triggers go to the station's own trigger path
(``Dispatcher.submit_trigger``, the one ``cmd/inspect`` uses: recorded in the outbox first, answered once, by a
result or an error) and recipes to its reload (``Dispatcher.reload_camera``, ``cmd/reload``'s checks); the
station tells this object about every inspection and every trigger it answered with an error.

The handshake (docs/opcua.md) for PLCs that can neither call methods nor subscribe to events:
1. the PLC waits for ``Busy = false`` and ``ResultReady = false``, writes ``PartId``, then ``Trigger = true``;
2. the station sets ``Busy = true`` at once and takes the trigger (a refused one: ``ErrorCode`` and
   ``ResultReady``, as for a result);
3. with the result it writes ``ResultOk``, ``Score``, ``Kind``, ``ResultPartId``, ``ResultId``, ``ErrorCode``
   and ``ErrorText``, then ``ResultReady = true`` and ``Busy = false``;
4. the PLC reads them and writes ``Acknowledge = true``: the station clears ``ResultReady``; the PLC writes
   ``Trigger = false`` and ``Acknowledge = false``, and the next cycle may begin.
A ``Trigger = true`` written while busy, before the acknowledge, or without a fall to false first is refused
with ``BadInvalidState`` and changes nothing: one inspection per accepted trigger, never answered twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from asyncua import Server, ua

from runtime.station.dispatch import CommandError, Dispatcher
from runtime.station.opcua import machine_vision as mv
from runtime.station.opcua.address_space import (
    HANDSHAKE,
    Namespaces,
    VisionSystemNodes,
    add_vision_system,
    system_state_value,
)
from runtime.station.workers import STARTING

if TYPE_CHECKING:
    from runtime.station.messages import Inspection
    from runtime.station.view import StationView

log = logging.getLogger(__name__)

MAX_ID = 512  # longest id string (recipe, measurement, product) taken from a client
MAX_LIST = 1000  # most recipes or results one call returns
ERROR_NONE, ERROR_REFUSED, ERROR_FAILED = 0, 1, 2  # the handshake's ErrorCode


class Refused(Exception):
    """A call or write that cannot be carried out: answered with ``status`` (an OPC UA status code)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Job:
    """A trigger the OPC UA server handed to the station, until its result or error comes back."""

    id: str
    part_id: str
    via: str  # "method" (StartSingleJob) or "handshake"
    meas_id: object = None
    product_id: object = None


@dataclass
class CameraSystem:
    camera: str
    nodes: VisionSystemNodes
    vision: mv.State = mv.OPERATIONAL
    automatic: mv.State = mv.READY
    jobs: dict[int, Job] = field(default_factory=dict)  # outbox row -> job
    results: deque = field(default_factory=deque)
    handshake_row: int | None = None  # the handshake's trigger in progress
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # a trigger's submission before its answer


def _text(value: object, what: str, required: bool = False) -> str | None:
    """The ``Id`` of an id structure (PartIdDataType, RecipeIdExternalDataType, ...), checked and bounded."""
    text = getattr(value, "Id", None) if value is not None else None
    if text is None or text == "":
        if required:
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"{what}.Id is required")
        return None
    if not isinstance(text, str) or len(text) > MAX_ID:
        raise Refused(ua.StatusCodes.BadInvalidArgument, f"{what}.Id must be a string of at most {MAX_ID} characters")
    return text


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class VisionSystems:
    """Every camera's VisionSystem in one server, and the station behind them: read through its view, commanded
    through its dispatcher (the same trigger and reload paths as cmd/inspect and cmd/reload)."""

    def __init__(self, server: Server, ns: Namespaces, station: StationView, commands: Dispatcher,
                 results_kept: int, page_url: Callable[[], str | None]) -> None:
        self.server = server
        self.ns = ns
        self.station = station
        self.commands = commands
        self.results_kept = results_kept
        self.page_url = page_url
        self.systems: dict[str, CameraSystem] = {}
        self._by_node: dict[ua.NodeId, CameraSystem] = {}
        self._result_events: dict[str, object] = {}
        self._transition_events: dict[tuple[str, str], object] = {}

    async def add(self, camera: str, continuous: bool) -> None:
        methods = {name: self._method(name) for name in mv.METHODS}
        nodes = await add_vision_system(self.server, self.ns, camera, methods)
        system = CameraSystem(camera, nodes, results=deque(maxlen=self.results_kept))
        system.automatic = mv.CONTINUOUS_EXECUTION if continuous else mv.READY
        self.systems[camera] = system
        for node in (nodes.system, nodes.vision_machine, nodes.automatic_machine,
                     *[await nodes.system.get_child(f"{self.ns.mv}:{name}")
                       for name in ("RecipeManagement", "ResultManagement")]):
            self._by_node[node.nodeid] = system
        self._result_events[camera] = await self.server.get_event_generator(
            ua.NodeId(mv.OBJECT_TYPES["ResultReadyEventType"][0], self.ns.mv), nodes.system)
        for machine, node in (("vision", nodes.vision_machine), ("automatic", nodes.automatic_machine)):
            self._transition_events[(camera, machine)] = await self.server.get_event_generator(
                ua.ObjectIds.TransitionEventType, node)
        await self._write_state(nodes.vision_state, system.vision)
        await self._write_state(nodes.automatic_state, system.automatic)
        for name, writer in (("Trigger", self._write_trigger), ("Acknowledge", self._write_acknowledge),
                             ("PartId", self._write_part_id)):
            self.server.iserver.aspace.set_attribute_value_setter(
                nodes.handshake[name].nodeid, ua.AttributeIds.Value,
                lambda node, attr, value, system=system, writer=writer: writer(system, node, attr, value))

    # -- the station tells us ---------------------------------------------------------------------

    async def on_inspection(self, inspection: Inspection) -> None:
        system = self.systems.get(inspection.camera)
        if system is None:
            return
        async with system.lock:  # a trigger being submitted is registered before its answer is matched
            job = system.jobs.pop(inspection.trigger, None) if inspection.trigger is not None else None
        try:
            result = self._result(system, inspection, job)
            system.results.append(result)
        finally:  # the job ends whatever happened to its report, and before ResultReady: a client that starts the
            # next job on the event finds the machine Ready
            if job is not None and job.via == "handshake":
                await self._handshake_answer(system, inspection.trigger, ERROR_NONE, "", inspection)
            if job is not None and job.via == "method" and system.automatic == mv.SINGLE_EXECUTION:
                await self.transition(system, "automatic", mv.READY)
        await self._fire_result_ready(system, result, inspection, job)

    async def on_trigger_failed(self, row: int | None, camera: str, error: str) -> None:
        system = self.systems.get(camera)
        if system is None or row is None:
            return
        async with system.lock:
            job = system.jobs.pop(row, None)
        if job is None:
            return
        if job.via == "handshake":
            await self._handshake_answer(system, row, ERROR_FAILED, error, None)
        elif system.automatic == mv.SINGLE_EXECUTION:
            await self.transition(system, "automatic", mv.READY)

    async def follow_health(self, problems: list[str]) -> None:
        """SystemState and the Error state from the station's health (called every second)."""
        for camera, system in self.systems.items():
            mine = [p for p in problems if p.startswith((f"camera {camera} ", f"camera {camera}:"))
                    and not p.endswith(f" is {STARTING}")]  # a camera opening its source is not in error yet
            others = [p for p in problems if not p.startswith("camera ")]
            if mine and system.vision == mv.OPERATIONAL:
                await self.transition(system, "vision", mv.ERROR)
            elif not mine and system.vision == mv.ERROR:
                await self.transition(system, "vision", mv.OPERATIONAL)
            if mine:
                state = mv.UNSCHEDULED_DOWNTIME
            elif system.vision in (mv.HALTED, mv.PREOPERATIONAL):
                state = mv.STANDBY
            else:
                state = mv.PRODUCTION
            await system.nodes.system_state.write_value(ua.Variant(
                system_state_value(state, "; ".join(mine + others)), ua.VariantType.ExtensionObject))

    async def heartbeat(self, count: int) -> None:
        for system in self.systems.values():
            await system.nodes.handshake["Heartbeat"].write_value(ua.Variant(count % 2**32, ua.VariantType.UInt32))

    # -- states ---------------------------------------------------------------------------------------

    async def _write_state(self, variable, state: mv.State) -> None:
        await variable.text.write_value(ua.LocalizedText(state.name))
        await variable.id.write_value(ua.Variant(ua.NodeId(state.id, self.ns.mv), ua.VariantType.NodeId))

    async def transition(self, system: CameraSystem, machine: str, to: mv.State) -> None:
        """Change one state machine's state and report it with a TransitionEvent from that machine."""
        before = system.vision if machine == "vision" else system.automatic
        if before == to:
            return
        if machine == "vision":
            system.vision = to
            await self._write_state(system.nodes.vision_state, to)
        else:
            system.automatic = to
            await self._write_state(system.nodes.automatic_state, to)
        generator = self._transition_events[(system.camera, machine)]
        name = mv.TRANSITIONS.get((before.name, to.name), f"{before.name}To{to.name}")
        generator.event.Transition = ua.LocalizedText(name)
        generator.event.FromState = ua.LocalizedText(before.name)
        generator.event.ToState = ua.LocalizedText(to.name)
        await generator.trigger(message=f"{system.camera}: {before.name} -> {to.name}")

    # -- methods ----------------------------------------------------------------------------------------

    def _method(self, name: str):
        handler = getattr(self, f"_call_{name}")

        async def call(parent: ua.NodeId, *arguments):
            system = self._by_node.get(parent)
            try:
                if system is None:
                    raise Refused(ua.StatusCodes.BadNodeIdInvalid, f"{parent} is no VisionSystem component")
                return await handler(system, *[a.Value if isinstance(a, ua.Variant) else a for a in arguments])
            except Refused as exc:
                log.warning("OPC UA %s on %s refused: %s", name, system.camera if system else parent, exc,
                            extra={"method": name})
                return ua.StatusCode(exc.status)
            except TypeError:  # the wrong number of arguments
                return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
        return call

    async def _call_SelectModeAutomatic(self, system: CameraSystem):
        if system.vision == mv.ERROR:
            raise Refused(ua.StatusCodes.BadInvalidState, "the camera is in Error: Reset first")
        await self.transition(system, "vision", mv.OPERATIONAL)
        return [ua.Variant(0, ua.VariantType.Int32)]

    async def _call_Reset(self, system: CameraSystem, cause=None, description=None):
        if system.vision in (mv.ERROR, mv.HALTED):
            await self.transition(system, "vision", mv.PREOPERATIONAL)
        return [ua.Variant(0, ua.VariantType.Int32)]

    async def _call_Halt(self, system: CameraSystem, cause=None, description=None):
        await self.transition(system, "vision", mv.HALTED)
        return [ua.Variant(0, ua.VariantType.Int32)]

    async def _call_ConfirmAll(self, system: CameraSystem, comment=None):
        return []

    async def _call_StartSingleJob(self, system: CameraSystem, meas_id, part_id, recipe_id, product_id,
                                   parameters=None):
        if system.vision != mv.OPERATIONAL or system.automatic != mv.READY:
            raise Refused(ua.StatusCodes.BadInvalidState, f"StartSingleJob needs Operational and Ready, the camera is "
                          f"{system.vision.name} / {system.automatic.name}")
        part = _text(part_id, "PartId", required=True)
        _text(meas_id, "MeasId")
        _text(product_id, "ProductId")
        recipe = _text(recipe_id, "RecipeId")
        if recipe is not None and recipe != self._recipe_name(system):
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"recipe {recipe[:80]!r} is not the prepared one "
                          f"({self._recipe_name(system)}): PrepareRecipe first")
        async with system.lock:
            row = await self._submit(system, part)
            job = Job(str(row), part, "method", meas_id, product_id)
            system.jobs[row] = job
            await self.transition(system, "automatic", mv.SINGLE_EXECUTION)
        return [ua.Variant(ua.JobIdDataType(Id=job.id), ua.VariantType.ExtensionObject),
                ua.Variant(0, ua.VariantType.Int32)]

    async def _call_StartContinuous(self, system: CameraSystem, *arguments):
        raise Refused(ua.StatusCodes.BadNotSupported, "a camera's mode (continuous or trigger) is its configuration")

    async def _call_Stop(self, system: CameraSystem, cause=None, description=None):
        raise Refused(ua.StatusCodes.BadNotSupported if system.automatic != mv.SINGLE_EXECUTION
                      else ua.StatusCodes.BadInvalidState, "an accepted job is always answered; a camera's mode is "
                      "its configuration")

    _call_Abort = _call_Stop

    async def _submit(self, system: CameraSystem, part_id: str) -> int:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.commands.submit_trigger,
                                                                    system.camera, part_id)
        except CommandError as exc:
            raise Refused(ua.StatusCodes.BadInvalidArgument if "part_id" in str(exc)
                          else ua.StatusCodes.BadInvalidState, str(exc)) from None

    # -- recipes ----------------------------------------------------------------------------------------

    def _recipe_name(self, system: CameraSystem) -> str:
        path = Path(self.station.camera_views()[system.camera].bundle.path).resolve()
        for root in self.station.config.reload_roots:
            if root in path.parents:
                return str(path.relative_to(root))
        return str(path)

    def _recipe_id(self, system: CameraSystem, name: str, prepared: bool):
        value = ua.RecipeIdInternalDataType(Id=name)
        if prepared:
            info = self.station.camera_views()[system.camera].bundle
            value.Version, value.Hash, value.HashAlgorithm = info.name, info.hash.encode(), "edge-anomaly bundle hash"
        return value

    async def _call_PrepareRecipe(self, system: CameraSystem, external_id, internal_id):
        name = _text(external_id, "ExternalId") or _text(internal_id, "InternalIdIn")
        if name is None:
            raise Refused(ua.StatusCodes.BadInvalidArgument, "name the recipe (a bundle in bundles_dir) in ExternalId")
        ready = system.automatic == mv.READY
        if ready:
            await self.transition(system, "automatic", mv.INITIALIZED)
        try:
            refusal = await asyncio.get_running_loop().run_in_executor(None, self.commands.reload_camera,
                                                                       system.camera, name)
        except CommandError as exc:
            raise Refused(ua.StatusCodes.BadInvalidArgument, str(exc)) from None
        finally:
            if ready:
                await self.transition(system, "automatic", mv.READY)
        if refusal is not None:
            raise Refused(ua.StatusCodes.BadSecurityChecksFailed, refusal)
        return [ua.Variant(self._recipe_id(system, self._recipe_name(system), True), ua.VariantType.ExtensionObject),
                ua.Variant(True, ua.VariantType.Boolean), ua.Variant(0, ua.VariantType.Int32)]

    async def _call_UnprepareRecipe(self, system: CameraSystem, external_id, internal_id):
        raise Refused(ua.StatusCodes.BadInvalidState, "a camera always runs one recipe: prepare another instead")

    async def _call_GetRecipeListFiltered(self, system: CameraSystem, external_id, product_id, is_prepared,
                                          max_results, start_index, timeout):
        wanted = _text(external_id, "ExternalId")
        prepared = self._recipe_name(system)
        names = await asyncio.get_running_loop().run_in_executor(None, self._bundle_names)
        if prepared not in names:
            names.insert(0, prepared)
        choice = int(is_prepared) if is_prepared is not None else 2
        rows = [name for name in names if (wanted is None or name == wanted)
                and (choice == 2 or (name == prepared) == bool(choice))]
        start, count = int(start_index or 0), min(int(max_results or MAX_LIST), MAX_LIST)
        page = rows[start:start + count]
        return [ua.Variant(start + len(page) >= len(rows), ua.VariantType.Boolean),
                ua.Variant(len(page), ua.VariantType.UInt32), ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant([self._recipe_id(system, name, name == prepared) for name in page],
                           ua.VariantType.ExtensionObject),
                ua.Variant(0, ua.VariantType.Int32)]

    def _bundle_names(self) -> list[str]:
        """Bundles in bundles_dir (folders with a manifest, .tar files), by name relative to it."""
        names = []
        for root in self.station.config.reload_roots:
            for path in sorted(root.iterdir()) if root.is_dir() else []:
                if (path.is_dir() and (path / "manifest.json").is_file()) or path.suffix == ".tar":
                    names.append(str(path.relative_to(root)))
                if len(names) >= MAX_LIST:
                    return names
        return names

    # -- results ----------------------------------------------------------------------------------------

    def _result(self, system: CameraSystem, inspection: Inspection, job: Job | None):
        """The inspection as a ResultDataType; its verdict, score, kind, regions and evidence in ResultContent."""
        verdict = inspection.result
        page = self.page_url()
        content = {"label": verdict.label, "ok": not verdict.is_anomalous, "score": verdict.score,
                   "normalized_score": round(verdict.normalized_score, 6), "kind": verdict.kind,
                   "regions": [{"x": x, "y": y, "width": w, "height": h} for x, y, w, h in inspection.regions],
                   "inspection": inspection.id, "bundle": {"name": inspection.bundle.name,
                                                           "hash": inspection.bundle.hash},
                   "evidence_url": f"{page}/api/inspections/{inspection.id}" if page else None,
                   "source": inspection.source}
        result = ua.ResultDataType()
        result.ResultId = ua.ResultIdDataType(Id=inspection.id)
        result.IsPartial = False
        result.IsSimulated = False
        result.ResultState = mv.RESULT_COMPLETED
        result.PartId = ua.PartIdDataType(Id=inspection.part_id) if inspection.part_id else None
        result.MeasId = job.meas_id if job is not None and job.meas_id is not None else None
        result.ProductId = job.product_id if job is not None and job.product_id is not None else None
        result.InternalRecipeId = self._recipe_id(system, self._recipe_name(system), True)
        result.InternalConfigurationId = ua.ConfigurationIdDataType(Id="station.yaml")
        result.JobId = ua.JobIdDataType(Id=job.id if job is not None else
                                        (str(inspection.trigger) if inspection.trigger is not None else ""))
        result.CreationTime = datetime.now(timezone.utc)
        result.ProcessingTimes = ua.ProcessingTimesDataType(
            StartTime=_utc(inspection.started), EndTime=_utc(inspection.started + inspection.total_ms / 1000),
            ProcessingDuration=float(verdict.latency_ms))
        result.ResultContent = [ua.Variant(json.dumps(content, separators=(",", ":")), ua.VariantType.String)]
        return result

    async def _fire_result_ready(self, system: CameraSystem, result, inspection: Inspection, job: Job | None) -> None:
        generator = self._result_events[system.camera]
        event = generator.event
        for name in mv.RESULT_READY_FIELDS:  # structures as ExtensionObjects: asyncua leaves custom types out
            value = getattr(result, name, None)
            if hasattr(type(value), "data_type"):
                value = ua.Variant(value, ua.VariantType.ExtensionObject)
            elif isinstance(value, bool):  # a bare False would be taken for "not set"
                value = ua.Variant(value, ua.VariantType.Boolean)
            setattr(event, name, value)
        event.ResultState = ua.Variant(mv.RESULT_COMPLETED, ua.VariantType.Int32)
        event.ResultContent = ua.Variant(result.ResultContent, ua.VariantType.Variant)
        await generator.trigger(message=f"{system.camera}: {inspection.result.label} "
                                        f"({inspection.part_id or inspection.source})")

    async def _call_GetResultById(self, system: CameraSystem, result_id, timeout=None):
        wanted = _text(result_id, "ResultId", required=True)
        for result in reversed(system.results):
            if result.ResultId.Id == wanted:
                return [ua.Variant(0, ua.VariantType.UInt32), ua.Variant(result, ua.VariantType.ExtensionObject),
                        ua.Variant(0, ua.VariantType.Int32)]
        raise Refused(ua.StatusCodes.BadNotFound, f"no result {wanted[:80]!r} among the last {len(system.results)}")

    async def _call_GetResultListFiltered(self, system: CameraSystem, result_state, meas_id, part_id,
                                          external_recipe_id, internal_recipe_id, external_configuration_id,
                                          internal_configuration_id, product_id, job_id, max_results, start_index,
                                          timeout):
        part, job = _text(part_id, "PartId"), _text(job_id, "JobId")
        state = int(result_state or 0)
        rows = [r for r in reversed(system.results)  # newest first
                if (part is None or (r.PartId is not None and r.PartId.Id == part))
                and (job is None or r.JobId.Id == job) and (state == 0 or r.ResultState == state)]
        start, count = int(start_index or 0), min(int(max_results or MAX_LIST), MAX_LIST)
        page = rows[start:start + count]
        return [ua.Variant(start + len(page) >= len(rows), ua.VariantType.Boolean),
                ua.Variant(len(page), ua.VariantType.UInt32), ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(page, ua.VariantType.ExtensionObject), ua.Variant(0, ua.VariantType.Int32)]

    async def _call_ReleaseResultHandle(self, system: CameraSystem, handle=None):
        return [ua.Variant(0, ua.VariantType.Int32)]  # results are not held per handle: nothing to release

    # -- the PLC handshake --------------------------------------------------------------------------------

    def _store(self, node, attr, value) -> None:
        node.attributes[attr].value = value

    def _current(self, system: CameraSystem, name: str):
        data = self.server.iserver.aspace.read_attribute_value(system.nodes.handshake[name].nodeid,
                                                               ua.AttributeIds.Value)
        return data.Value.Value if data.Value is not None else None

    def _write_part_id(self, system: CameraSystem, node, attr, value) -> None:
        text = value.Value.Value if value.Value is not None else None
        if not isinstance(text, str) or len(text) > MAX_ID:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadOutOfRange)
        if self._current(system, "Busy"):
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidState)  # the part in hand keeps its id
        self._store(node, attr, value)

    def _write_trigger(self, system: CameraSystem, node, attr, value) -> None:
        rising = bool(value.Value.Value) and not self._current(system, "Trigger")
        if bool(value.Value.Value) and (not rising or self._current(system, "Busy")
                                        or self._current(system, "ResultReady")):
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidState)
        self._store(node, attr, value)
        if rising:
            self._set(system, "Busy", True)
            asyncio.get_running_loop().create_task(self._handshake_trigger(system, self._current(system, "PartId")))

    def _write_acknowledge(self, system: CameraSystem, node, attr, value) -> None:
        self._store(node, attr, value)
        if bool(value.Value.Value) and self._current(system, "ResultReady"):
            self._set(system, "ResultReady", False)

    def _set(self, system: CameraSystem, name: str, value: object) -> None:
        """Write a handshake variable from a write handler: queued on the loop before any later request is served."""
        variant = HANDSHAKE[name][0]
        asyncio.get_running_loop().create_task(system.nodes.handshake[name].write_value(ua.Variant(value, variant)))

    async def _handshake_trigger(self, system: CameraSystem, part_id: str) -> None:
        async with system.lock:
            try:
                row = await self._submit(system, part_id)
            except Refused as exc:
                await self._handshake_answer(system, None, ERROR_REFUSED, str(exc), None)
                return
            system.handshake_row = row
            system.jobs[row] = Job(str(row), part_id, "handshake")

    async def _handshake_answer(self, system: CameraSystem, row: int | None, error: int, text: str,
                                inspection: Inspection | None) -> None:
        """The result (or error) into the handshake's variables, ResultReady last."""
        nodes = system.nodes.handshake
        verdict = inspection.result if inspection is not None else None
        await nodes["ResultOk"].write_value(ua.Variant(verdict is not None and not verdict.is_anomalous,
                                                       ua.VariantType.Boolean))
        await nodes["Score"].write_value(ua.Variant(float(verdict.score) if verdict else 0.0, ua.VariantType.Double))
        await nodes["Kind"].write_value(ua.Variant(verdict.kind if verdict else "", ua.VariantType.String))
        await nodes["ResultPartId"].write_value(ua.Variant(inspection.part_id if inspection else
                                                           self._current(system, "PartId"), ua.VariantType.String))
        await nodes["ResultId"].write_value(ua.Variant(inspection.id if inspection else "", ua.VariantType.String))
        await nodes["ErrorCode"].write_value(ua.Variant(error, ua.VariantType.Int32))
        await nodes["ErrorText"].write_value(ua.Variant(text[:1000], ua.VariantType.String))
        await nodes["ResultReady"].write_value(ua.Variant(True, ua.VariantType.Boolean))
        await nodes["Busy"].write_value(ua.Variant(False, ua.VariantType.Boolean))
        system.handshake_row = None
