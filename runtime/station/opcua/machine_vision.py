"""The facts of OPC 40100-1 (OPC UA for Machine Vision, part 1, version 1.0.0) this server uses, in one place.

Numeric node ids, browse names, state numbers and structure layouts are the specification's (its published
nodeset, namespace ``http://opcfoundation.org/UA/MachineVision``), so that a generic OPC 40100 client finds
the types where it expects them. Only what the station implements is listed: the address space is built
from these tables by :mod:`runtime.station.opcua.address_space`.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "http://opcfoundation.org/UA/MachineVision"

# Object types (i=... in NAMESPACE) and the standard types they derive from (namespace 0).
BASE_OBJECT_TYPE, FINITE_STATE_MACHINE_TYPE, BASE_EVENT_TYPE, STATE_TYPE = 58, 2771, 2041, 2307
OBJECT_TYPES: dict[str, tuple[int, int]] = {  # browse name -> (id, standard supertype)
    "VisionSystemType": (1003, BASE_OBJECT_TYPE),
    "RecipeManagementType": (1004, BASE_OBJECT_TYPE),
    "ConfigurationManagementType": (1006, BASE_OBJECT_TYPE),
    "ResultManagementType": (1007, BASE_OBJECT_TYPE),
    "SafetyStateManagementType": (1009, BASE_OBJECT_TYPE),
    "VisionEventType": (1015, BASE_EVENT_TYPE),
    "VisionStateMachineType": (1017, FINITE_STATE_MACHINE_TYPE),
    "VisionAutomaticModeStateMachineType": (1021, FINITE_STATE_MACHINE_TYPE),
    "ResultReadyEventType": (1024, BASE_EVENT_TYPE),
}

# The VisionSystemType's components and the type of each.
COMPONENTS: dict[str, str] = {
    "ConfigurationManagement": "ConfigurationManagementType",
    "RecipeManagement": "RecipeManagementType",
    "ResultManagement": "ResultManagementType",
    "SafetyStateManagement": "SafetyStateManagementType",
    "VisionStateMachine": "VisionStateMachineType",
}


@dataclass(frozen=True)
class State:
    name: str
    id: int  # the state object in its state machine type
    number: int  # its StateNumber


# VisionStateMachineType's states, then VisionAutomaticModeStateMachineType's.
PREOPERATIONAL, HALTED, ERROR, OPERATIONAL = (State("Preoperational", 5028, 1), State("Halted", 5029, 2),
                                              State("Error", 5030, 3), State("Operational", 5031, 4))
INITIALIZED, READY, SINGLE_EXECUTION, CONTINUOUS_EXECUTION = (
    State("Initialized", 5056, 5), State("Ready", 5057, 6), State("SingleExecution", 5058, 7),
    State("ContinuousExecution", 5059, 8))
VISION_STATES = (PREOPERATIONAL, HALTED, ERROR, OPERATIONAL)
AUTOMATIC_STATES = (INITIALIZED, READY, SINGLE_EXECUTION, CONTINUOUS_EXECUTION)

# Transitions the station takes: (from, to) -> the transition's browse name in its type.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("Preoperational", "Operational"): "PreoperationalToOperational",
    ("Preoperational", "Halted"): "PreoperationalToHalted",
    ("Operational", "Halted"): "OperationalToHalted",
    ("Operational", "Error"): "OperationalToErrorAuto",
    ("Preoperational", "Error"): "PreoperationalToErrorAuto",
    ("Error", "Operational"): "ErrorToOperationalAuto",
    ("Error", "Preoperational"): "ErrorToPreoperational",
    ("Error", "Halted"): "ErrorToHalted",
    ("Halted", "Preoperational"): "HaltedToPreoperational",
    ("Ready", "SingleExecution"): "ReadyToSingleExecution",
    ("SingleExecution", "Ready"): "SingleExecutionToReadyAuto",
    ("Ready", "ContinuousExecution"): "ReadyToContinuousExecution",
    ("ContinuousExecution", "Ready"): "ContinuousExecutionToReadyStop",
    ("Initialized", "Ready"): "InitializedToReadyRecipe",
    ("Ready", "Initialized"): "ReadyToInitializedRecipe",
}

# ResultReadyEventType's properties: browse name -> (id, data type name: a STRUCTS entry or a standard type).
RESULT_READY_FIELDS: dict[str, tuple[int, str]] = {
    "ResultId": (6295, "ResultIdDataType"),
    "IsPartial": (6296, "Boolean"),
    "IsSimulated": (6297, "Boolean"),
    "ResultState": (6298, "ResultStateDataType"),
    "MeasId": (6299, "MeasIdDataType"),
    "JobId": (6300, "JobIdDataType"),
    "ExternalRecipeId": (6301, "RecipeIdExternalDataType"),
    "InternalRecipeId": (6302, "RecipeIdInternalDataType"),
    "CreationTime": (6303, "UtcTime"),
    "PartId": (6304, "PartIdDataType"),
    "ProcessingTimes": (6305, "ProcessingTimesDataType"),
    "ResultContent": (6306, "BaseDataType[]"),
    "ProductId": (6143, "ProductIdDataType"),
    "InternalConfigurationId": (6142, "ConfigurationIdDataType"),
    "ExternalConfigurationId": (6045, "ConfigurationIdDataType"),
}


@dataclass(frozen=True)
class Struct:
    """A structure data type: its id, its Default Binary encoding's id, its supertype and its fields
    ((name, data type, optional); a subtype lists its supertype's fields first, as the specification does)."""

    name: str
    id: int
    encoding: int
    fields: tuple[tuple[str, str, bool], ...]
    base: str | None = None


_ID = (("Id", "TrimmedString", False),)
_ID_DESCRIPTION = (*_ID, ("Description", "LocalizedText", True))
_BINARY_ID = (*_ID, ("Version", "TrimmedString", True), ("Hash", "ByteString", True),
              ("HashAlgorithm", "String", True), ("Description", "LocalizedText", True))

# In dependency order: a structure's fields only name structures above it.
STRUCTS: tuple[Struct, ...] = (
    Struct("BinaryIdBaseDataType", 3019, 5027, _BINARY_ID),
    Struct("RecipeIdExternalDataType", 3002, 5002, _BINARY_ID, base="BinaryIdBaseDataType"),
    Struct("RecipeIdInternalDataType", 3013, 5268, _BINARY_ID, base="BinaryIdBaseDataType"),
    Struct("ConfigurationIdDataType", 3008, 5090, _BINARY_ID, base="BinaryIdBaseDataType"),
    Struct("ProductIdDataType", 3003, 5224, _ID_DESCRIPTION),
    Struct("PartIdDataType", 3004, 5013, _ID_DESCRIPTION),
    Struct("MeasIdDataType", 3015, 5006, _ID_DESCRIPTION),
    Struct("JobIdDataType", 3016, 5008, _ID),
    Struct("ResultIdDataType", 3021, 5274, _ID),
    Struct("ProcessingTimesDataType", 3005, 5016, (
        ("StartTime", "UtcTime", False), ("EndTime", "UtcTime", False),
        ("AcquisitionDuration", "Duration", True), ("ProcessingDuration", "Duration", True))),
    Struct("SystemStateDescriptionDataType", 3024, 5278, (
        ("State", "SystemStateDataType", False), ("StateDescription", "TrimmedString", True))),
    Struct("ResultDataType", 3006, 5018, (
        ("ResultId", "ResultIdDataType", False), ("HasTransferableDataOnFile", "Boolean", True),
        ("IsPartial", "Boolean", False), ("IsSimulated", "Boolean", True),
        ("ResultState", "ResultStateDataType", False), ("MeasId", "MeasIdDataType", True),
        ("PartId", "PartIdDataType", True), ("ExternalRecipeId", "RecipeIdExternalDataType", True),
        ("InternalRecipeId", "RecipeIdInternalDataType", False), ("ProductId", "ProductIdDataType", True),
        ("ExternalConfigurationId", "ConfigurationIdDataType", True),
        ("InternalConfigurationId", "ConfigurationIdDataType", False), ("JobId", "JobIdDataType", False),
        ("CreationTime", "UtcTime", False), ("ProcessingTimes", "ProcessingTimesDataType", True),
        ("ResultContent", "BaseDataType[]", True))),
)

# Simple subtypes: name -> (id, standard supertype id).
SIMPLE_TYPES: dict[str, tuple[int, int]] = {
    "TrimmedString": (3017, 12),  # of String
    "ResultStateDataType": (3009, 6),  # of Int32: deliberately not an enumeration
    "Handle": (3018, 7),  # of UInt32
}

# Enumerations: name -> (id, {field name: value}).
ENUMS: dict[str, tuple[int, dict[str, int]]] = {
    "SystemStateDataType": (3023, {"PRD_1": 1, "SBY_2": 2, "ENG_3": 3, "SDT_4": 4, "UDT_5": 5, "NST_6": 6}),
    "TriStateBooleanDataType": (3014, {"FALSE_0": 0, "TRUE_1": 1, "DONTCARE_2": 2}),
}

# SystemStateDataType (SEMI E10): production, standby, engineering, scheduled / unscheduled downtime, non-scheduled.
PRODUCTION, STANDBY, ENGINEERING, SCHEDULED_DOWNTIME, UNSCHEDULED_DOWNTIME = 1, 2, 3, 4, 5

# ResultStateDataType: 1 completed (the verdict, OK or NOK, is in ResultContent), 4 failed.
RESULT_COMPLETED, RESULT_FAILED = 1, 4

# Methods: browse name -> (input arguments, output arguments), each (name, data type, is array).
Arguments = tuple[tuple[str, str, bool], ...]
_CAUSE: Arguments = (("Cause", "Int32", False), ("CauseDescription", "String", False))
_ERROR: Arguments = (("Error", "Int32", False),)
_JOB: Arguments = (("MeasId", "MeasIdDataType", False), ("PartId", "PartIdDataType", False),
                   ("RecipeId", "RecipeIdExternalDataType", False), ("ProductId", "ProductIdDataType", False),
                   ("Parameters", "KeyValuePair", True))
METHODS: dict[str, tuple[Arguments, Arguments]] = {
    "SelectModeAutomatic": ((), _ERROR),
    "Reset": (_CAUSE, _ERROR),
    "Halt": (_CAUSE, _ERROR),
    "ConfirmAll": ((("Comment", "LocalizedText", False),), ()),
    "StartSingleJob": (_JOB, (("JobId", "JobIdDataType", False), *_ERROR)),
    "StartContinuous": (_JOB, (("JobId", "JobIdDataType", False), *_ERROR)),
    "Stop": (_CAUSE, _ERROR),
    "Abort": (_CAUSE, _ERROR),
    "PrepareRecipe": ((("ExternalId", "RecipeIdExternalDataType", False),
                       ("InternalIdIn", "RecipeIdInternalDataType", False)),
                      (("InternalIdOut", "RecipeIdInternalDataType", False), ("IsCompleted", "Boolean", False),
                       *_ERROR)),
    "UnprepareRecipe": ((("ExternalId", "RecipeIdExternalDataType", False),
                         ("InternalIdIn", "RecipeIdInternalDataType", False)),
                        (("InternalIdOut", "RecipeIdInternalDataType", False), *_ERROR)),
    "GetRecipeListFiltered": ((("ExternalId", "RecipeIdExternalDataType", False),
                               ("ProductId", "ProductIdDataType", False),
                               ("IsPrepared", "TriStateBooleanDataType", False), ("MaxResults", "UInt32", False),
                               ("StartIndex", "UInt32", False), ("Timeout", "Int32", False)),
                              (("IsComplete", "Boolean", False), ("ResultCount", "UInt32", False),
                               ("RecipeHandle", "Handle", False), ("RecipeList", "RecipeIdInternalDataType", True),
                               *_ERROR)),
    "GetResultById": ((("ResultId", "ResultIdDataType", False), ("Timeout", "Int32", False)),
                      (("ResultHandle", "Handle", False), ("Result", "ResultDataType", False), *_ERROR)),
    "GetResultListFiltered": ((("ResultState", "ResultStateDataType", False), ("MeasId", "MeasIdDataType", False),
                               ("PartId", "PartIdDataType", False),
                               ("ExternalRecipeId", "RecipeIdExternalDataType", False),
                               ("InternalRecipeId", "RecipeIdInternalDataType", False),
                               ("ExternalConfigurationId", "ConfigurationIdDataType", False),
                               ("InternalConfigurationId", "ConfigurationIdDataType", False),
                               ("ProductId", "ProductIdDataType", False), ("JobId", "JobIdDataType", False),
                               ("MaxResults", "UInt32", False), ("StartIndex", "UInt32", False),
                               ("Timeout", "Int32", False)),
                              (("IsComplete", "Boolean", False), ("ResultCount", "UInt32", False),
                               ("ResultHandle", "Handle", False), ("ResultList", "ResultDataType", True), *_ERROR)),
    "ReleaseResultHandle": ((("ResultHandle", "Handle", False),), _ERROR),
}

# Which component holds each method (the state machines' methods sit on the machines themselves).
METHOD_OWNERS: dict[str, tuple[str, ...]] = {
    "VisionStateMachine": ("SelectModeAutomatic", "Reset", "Halt", "ConfirmAll"),
    "AutomaticModeStateMachine": ("StartSingleJob", "StartContinuous", "Stop", "Abort"),
    "RecipeManagement": ("PrepareRecipe", "UnprepareRecipe", "GetRecipeListFiltered"),
    "ResultManagement": ("GetResultById", "GetResultListFiltered", "ReleaseResultHandle"),
}
