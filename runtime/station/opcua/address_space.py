"""The OPC UA address space: OPC 40100-1's types (from :mod:`.machine_vision`'s tables) and one VisionSystem per camera.

Why one VisionSystem per camera: OPC 40100 gives a vision system one state machine that runs one job at a time
with one prepared recipe, which is what one camera of the station is (its own trigger queue, its own bundle).
A station with three cameras shows three VisionSystemType objects under Objects, named after the cameras.

Instance nodes have string ids in the station's own namespace, ``<camera>.<path>`` (e.g.
``line1-top.VisionStateMachine.AutomaticModeStateMachine.StartSingleJob``), so a PLC project can name them;
browse names of the specification's components are in the Machine Vision namespace, as a generic client expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncua import Node, Server, ua
from asyncua.common.manage_nodes import create_data_type, create_encoding

from runtime.station.opcua import machine_vision as mv

STANDARD_TYPES = {"String": 12, "LocalizedText": 21, "ByteString": 15, "Boolean": 1, "UtcTime": 294,
                  "Duration": 290, "Int32": 6, "UInt32": 7, "Double": 11, "BaseDataType": 24, "KeyValuePair": 14533,
                  "NodeId": 17}
TYPE_METHOD_IDS = {"StartSingleJob": 7098, "StartContinuous": 7009, "Stop": 7096, "Abort": 7097,
                   "SelectModeAutomatic": 7095, "Reset": 7093, "Halt": 7094, "ConfirmAll": 7066,
                   "PrepareRecipe": 7015, "UnprepareRecipe": 7055, "GetRecipeListFiltered": 7014,
                   "GetResultById": 7026, "GetResultListFiltered": 7089, "ReleaseResultHandle": 7090}


@dataclass
class Namespaces:
    mv: int  # the Machine Vision namespace
    own: int  # the station's instances

    def type_id(self, name: str) -> ua.NodeId:
        """A data type's NodeId by name: the specification's, or a standard one."""
        base = name.removesuffix("[]")
        if base in STANDARD_TYPES:
            return ua.NodeId(STANDARD_TYPES[base], 0)
        for struct in mv.STRUCTS:
            if struct.name == base:
                return ua.NodeId(struct.id, self.mv)
        known = {**{n: i for n, (i, _) in mv.SIMPLE_TYPES.items()}, **{n: i for n, (i, _) in mv.ENUMS.items()}}
        return ua.NodeId(known[base], self.mv)


async def define_types(server: Server) -> Namespaces:
    """Register the Machine Vision namespace with its data, object and event types; returns the namespaces."""
    mv_index = await server.register_namespace(mv.NAMESPACE)
    ns = Namespaces(mv=mv_index, own=mv_index)  # own is set by the caller once registered
    for name, (number, base) in mv.SIMPLE_TYPES.items():
        node = await create_data_type(server.get_node(ua.NodeId(base, 0)), ua.NodeId(number, mv_index),
                                      ua.QualifiedName(name, mv_index))
        if hasattr(ua, name):  # OPC UA 1.05 has its own TrimmedString and Handle: alias this id to the same class
            ua.register_basetype(name, node.nodeid, getattr(ua, name))
    for name, (number, values) in mv.ENUMS.items():
        node = await server.nodes.enum_data_type.add_data_type(ua.NodeId(number, mv_index),
                                                               ua.QualifiedName(name, mv_index))
        definition = ua.EnumDefinition()
        definition.Fields = [ua.EnumField(Name=key, Value=value, DisplayName=ua.LocalizedText(key))
                             for key, value in values.items()]
        await node.write_data_type_definition(definition)
    for struct in mv.STRUCTS:
        await _define_struct(server, ns, struct)
    await server.load_data_type_definitions()  # the Python classes (ua.PartIdDataType, ...) the server encodes
    for name, (number, base) in mv.OBJECT_TYPES.items():
        type_node = await server.get_node(ua.NodeId(base, 0)).add_object_type(ua.NodeId(number, mv_index),
                                                                                ua.QualifiedName(name, mv_index))
        if name == "ResultReadyEventType":
            for field_name, (field_id, data_type) in mv.RESULT_READY_FIELDS.items():
                prop = await type_node.add_property(ua.NodeId(field_id, mv_index),
                                                    ua.QualifiedName(field_name, mv_index), None,
                                                    datatype=ns.type_id(data_type))
                await prop.write_value_rank(1 if data_type.endswith("[]") else -1)
                await prop.set_modelling_rule(True)
        states = {"VisionStateMachineType": mv.VISION_STATES,
                  "VisionAutomaticModeStateMachineType": mv.AUTOMATIC_STATES}.get(name, ())
        for state in states:
            state_node = await type_node.add_object(ua.NodeId(state.id, mv_index),
                                                    ua.QualifiedName(state.name, mv_index), mv.STATE_TYPE)
            number = await state_node.get_child("0:StateNumber")  # StateType instantiated it
            await number.write_value(ua.Variant(state.number, ua.VariantType.UInt32))
    # The method declarations on their types, without a modelling rule: each instance gets its own, linked below.
    for owner, methods in mv.METHOD_OWNERS.items():
        type_name = mv.COMPONENTS.get(owner, "VisionAutomaticModeStateMachineType")
        type_node = server.get_node(ua.NodeId(mv.OBJECT_TYPES[type_name][0], mv_index))
        for method in methods:
            inputs, outputs = mv.METHODS[method]
            await type_node.add_method(ua.NodeId(TYPE_METHOD_IDS[method], mv_index),
                                                  ua.QualifiedName(method, mv_index), None,
                                                  [_argument(ns, a) for a in inputs],
                                                  [_argument(ns, a) for a in outputs])
    return ns


async def _define_struct(server: Server, ns: Namespaces, struct: mv.Struct) -> None:
    parent = (server.get_node(ns.type_id(struct.base)) if struct.base else server.nodes.base_structure_type)
    node = await create_data_type(parent, ua.NodeId(struct.id, ns.mv), ua.QualifiedName(struct.name, ns.mv))
    encoding = await create_encoding(node, ua.NodeId(struct.encoding, ns.mv), ua.QualifiedName("Default Binary", 0))
    definition = ua.StructureDefinition()
    definition.BaseDataType = parent.nodeid
    definition.DefaultEncodingId = encoding.nodeid
    optional = any(is_optional for _, _, is_optional in struct.fields)
    definition.StructureType = ua.StructureType.StructureWithOptionalFields if optional else ua.StructureType.Structure
    for name, data_type, is_optional in struct.fields:
        definition.Fields.append(ua.StructureField(
            Name=name, DataType=ns.type_id(data_type), ValueRank=1 if data_type.endswith("[]") else -1,
            ArrayDimensions=[0] if data_type.endswith("[]") else [], IsOptional=is_optional,
            Description=ua.LocalizedText(name)))
    await node.write_data_type_definition(definition)


def _argument(ns: Namespaces, spec: tuple[str, str, bool]) -> ua.Argument:
    name, data_type, is_array = spec
    return ua.Argument(Name=name, DataType=ns.type_id(data_type), ValueRank=1 if is_array else -1,
                       ArrayDimensions=[0] if is_array else [], Description=ua.LocalizedText(name))


@dataclass
class StateVariable:
    """A state machine's CurrentState (a FiniteStateVariable: text and the state's node id)."""

    text: Node
    id: Node


@dataclass
class VisionSystemNodes:
    """The nodes of one camera's VisionSystem the server reads and writes."""

    camera: str
    system: Node
    vision_state: StateVariable
    automatic_state: StateVariable
    automatic_machine: Node
    vision_machine: Node
    system_state: Node
    handshake: dict[str, Node] = field(default_factory=dict)


# The handshake's variables: name -> (data type, writable by the PLC, initial value).
HANDSHAKE = {
    "PartId": (ua.VariantType.String, True, ""),
    "Trigger": (ua.VariantType.Boolean, True, False),
    "Acknowledge": (ua.VariantType.Boolean, True, False),
    "Busy": (ua.VariantType.Boolean, False, False),
    "ResultReady": (ua.VariantType.Boolean, False, False),
    "ResultOk": (ua.VariantType.Boolean, False, False),
    "Score": (ua.VariantType.Double, False, 0.0),
    "Kind": (ua.VariantType.String, False, ""),
    "ResultPartId": (ua.VariantType.String, False, ""),
    "ResultId": (ua.VariantType.String, False, ""),
    "ErrorCode": (ua.VariantType.Int32, False, 0),
    "ErrorText": (ua.VariantType.String, False, ""),
    "Heartbeat": (ua.VariantType.UInt32, False, 0),
}


async def add_vision_system(server: Server, ns: Namespaces, camera: str, methods: dict[str, object]
                            ) -> VisionSystemNodes:
    """One camera's VisionSystemType instance under Objects, with ``methods`` (name -> callback) linked."""

    def nid(path: str) -> ua.NodeId:
        return ua.NodeId(f"{camera}.{path}" if path else camera, ns.own)

    def qname(name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, ns.mv)

    def type_of(name: str) -> ua.NodeId:
        return ua.NodeId(mv.OBJECT_TYPES[name][0], ns.mv)

    system = await server.nodes.objects.add_object(nid(""), ua.QualifiedName(camera, ns.own),
                                                   type_of("VisionSystemType"), instantiate_optional=False)
    components = {}
    for name, type_name in mv.COMPONENTS.items():
        components[name] = await system.add_object(nid(name), qname(name), type_of(type_name),
                                                    instantiate_optional=False)
    automatic = await components["VisionStateMachine"].add_object(
        nid("VisionStateMachine.AutomaticModeStateMachine"), qname("AutomaticModeStateMachine"),
        type_of("VisionAutomaticModeStateMachineType"), instantiate_optional=False)
    components["AutomaticModeStateMachine"] = automatic
    paths = {"VisionStateMachine": "VisionStateMachine",
             "AutomaticModeStateMachine": "VisionStateMachine.AutomaticModeStateMachine",
             "RecipeManagement": "RecipeManagement", "ResultManagement": "ResultManagement"}
    for owner, names in mv.METHOD_OWNERS.items():
        for method in names:
            inputs, outputs = mv.METHODS[method]
            await components[owner].add_method(nid(f"{paths[owner]}.{method}"), qname(method), methods[method],
                                               [_argument(ns, a) for a in inputs],
                                               [_argument(ns, a) for a in outputs])
    vision_state = await _state_variable(components["VisionStateMachine"])
    automatic_state = await _state_variable(automatic)
    safety = components["SafetyStateManagement"]
    await safety.add_variable(nid("SafetyStateManagement.VisionSafetyTriggered"), qname("VisionSafetyTriggered"),
                              False, ua.VariantType.Boolean)
    await safety.add_variable(nid("SafetyStateManagement.VisionSafetyInformation"), qname("VisionSafetyInformation"),
                              "", ua.VariantType.String)
    system_state = await system.add_variable(nid("SystemState"), qname("SystemState"), system_state_value(
        mv.PRODUCTION, ""), datatype=ns.type_id("SystemStateDescriptionDataType"))
    handshake_folder = await system.add_object(nid("Handshake"), ua.QualifiedName("Handshake", ns.own))
    handshake = {}
    for name, (variant, writable, initial) in HANDSHAKE.items():
        node = await handshake_folder.add_variable(nid(f"Handshake.{name}"), ua.QualifiedName(name, ns.own),
                                                   ua.Variant(initial, variant))
        if writable:
            await node.set_writable()
        handshake[name] = node
    return VisionSystemNodes(camera, system, vision_state, automatic_state, automatic,
                             components["VisionStateMachine"], system_state, handshake)


async def _state_variable(machine: Node) -> StateVariable:
    """The CurrentState the FiniteStateMachineType instantiated, and its Id."""
    text = await machine.get_child("0:CurrentState")
    return StateVariable(text, await text.get_child("0:Id"))


def system_state_value(state: int, description: str) -> object:
    """A SystemStateDescriptionDataType value (the class the server generated from the type's definition)."""
    value = ua.SystemStateDescriptionDataType()
    value.State = ua.SystemStateDataType(state)
    value.StateDescription = description[:512] or None
    return value
