"""The bundle manifest (``manifest.json``) as typed models: one schema for writers and readers.

The exporter builds a :class:`Manifest` and :func:`dump` writes it; the runtime, the station
and ``package`` read it with :func:`parse_manifest` and use attributes. The sections that carry
numbers the runtime computes with are the runtime's own types: ``scoring`` is
:class:`runtime.scoring.Scoring` (with ``runtime.global_stats.GlobalStats``) and ``parity.cpu``
is :class:`runtime.cpu.CpuInfo`; the model card (``model.json``) shares ``input``, ``scoring``
and ``capture``. Unknown keys are
refused in every section the runtime acts on (a typo must not silently mean a default), so a
format change goes with a new ``schema_version``; :func:`migrate` upgrades older manifests
step by step, so bundles already in the field keep loading. Descriptive records (training
metadata, where parity images came from) are free-form.

Version history: 1, the first format. 2 adds the optional ``signature``, ``self_test`` and
``parity.cpu`` and makes defaults explicit (``engine.batch``, ``batch.dynamic``). 3 adds the
optional ``drift_reference`` (a version 2 bundle reads as one without it). 4 adds the optional
``capture`` (what the training frames were) and the scoring's optional ``noise``, ``compression``
and ``capture_stats`` (a version 3 bundle reads as one without them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from runtime.backends import ENGINE_FORMATS
from runtime.cpu import ISAS, CpuInfo
from runtime.roi import CenterCrop, Roi
from runtime.schema import Section, decode_json_object, upgrade, validate

if TYPE_CHECKING:  # resolved on first use (_resolve_numeric_sections): they need numpy, reading the tables does not
    from runtime.global_stats import GlobalStats
    from runtime.scoring import Scoring

BUNDLE_FORMAT = "edge-anomaly-bundle"
SCHEMA_VERSION = 4
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few kB; anything near this is not one
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _plain_file_name(name: str) -> str:
    """One plain name inside the bundle folder (no folder, no ``..``, not absolute).

    Names come from whoever made the bundle: ``/etc/shadow`` or ``../x`` must never reach ``open()``,
    nor an error message about its hash.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name != name.strip():
        raise ValueError(f"file name {name[:80]!r} is not a plain name inside the bundle folder")
    return name


FileName = Annotated[str, AfterValidator(_plain_file_name)]


class BundleError(ValueError):
    """A bundle that cannot be trusted or used; the message names the file or field."""


class DynamicBatch(Section):
    dynamic: Literal[True] = True
    max: int = Field(32, ge=1)

    @property
    def max_batch(self) -> int:
        return self.max

    static: ClassVar[bool] = False


class StaticBatch(Section):
    dynamic: Literal[False] = False
    size: int = Field(ge=1)

    @property
    def max_batch(self) -> int:
        return self.size

    static: ClassVar[bool] = True


Batch = DynamicBatch | StaticBatch


class TensorSpec(Section):
    name: str
    shape: list[int]
    dtype: str


class ScoreAlignment(Section):
    """The line mapping PyTorch's raw scores onto a reduced-precision engine's (exporters.parity.aligned_scale)."""

    slope: float = Field(gt=0)
    intercept: float
    images: int


class Int8Recipe(Section):
    """The INT8 recipe chosen for the target CPU's instruction-set level (exporters.recipes)."""

    target_isa: Literal[ISAS]
    onnxruntime: Literal["U8U8", "U8S8"]  # U8U8 (uint8 weights) where the target lacks an 8-bit dot product
    openvino_weight_bits: Literal[7, 8]  # 7: NNCF's overflow fix, for the same targets

    @property
    def saturates(self) -> bool:
        """Whether the recipe is the one for a CPU whose 8-bit multiply-adds saturate (no VNNI, AMX or SDOT)."""
        return self.onnxruntime == "U8U8"


class Engine(Section):
    _omitted_when_none = frozenset({"calibration", "score_alignment", "int8_recipe", "inference_precision"})

    format: Literal[ENGINE_FORMATS]  # runtime.backends.ENGINES
    precision: Literal[PRECISIONS]
    quantized: list[str] = []
    parts: dict[str, str] = {}
    files: dict[str, str] = Field(description="role (model, weights, onnx) -> file name in the bundle")
    batch: Batch = DynamicBatch()
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    calibration: dict[str, Any] | None = None
    score_alignment: ScoreAlignment | None = None
    int8_recipe: Int8Recipe | None = None
    # OpenVINO's CPU inference precision the parity check ran at (and the runtime pins); absent: f32
    inference_precision: Literal["f32", "bf16"] | None = None

    @field_validator("files")
    @classmethod
    def _has_model(cls, files: dict[str, str]) -> dict[str, str]:
        if "model" not in files:
            raise ValueError("needs a 'model' entry")
        return files


class Normalization(Section):
    mean: list[float]
    std: list[float]


class InputSpec(Section):
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    color_order: Literal["RGB", "BGR"] = "RGB"
    normalization: Normalization
    roi: Roi | None = None  # x, y, width, height in frame pixels
    center_crop: CenterCrop | None = None  # fraction of the ROI's shorter side


STILLS, VIDEO, MIXED = "stills", "video", "stills and video"


class CaptureSection(Section):
    """What the training frames were; ``runtime.capture_check`` compares each source with it."""

    source: Literal["stills", "video", "stills and video"]
    suffixes: list[str]  # file types of the training sources, e.g. [".png"] or [".mp4"]
    frame_hw: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]  # median (height, width)
    noise: float = Field(ge=0)  # median capture noise (runtime.global_stats.capture_statistics), grey levels
    blockiness: float = Field(ge=0)  # median JPEG blockiness (1: none)


class AurocPair(Section):
    image_auroc: float | None
    pixel_auroc: float | None


class ParityTolerances(Section):
    max_heatmap_diff: float
    min_score_rank_corr: float
    max_image_auroc_drop: float
    max_pixel_auroc_drop: float


class Parity(Section):
    """The export's agreement with PyTorch (exporters.parity); ``cpu`` is the exporting CPU."""

    _omitted_when_none = frozenset({"cpu"})

    max_heatmap_diff: float
    score_rank_corr: float | None
    image_auroc_delta: float | None
    pixel_auroc_delta: float | None
    heatmap_units: str
    pytorch: AurocPair
    engine: AurocPair
    images: dict[str, Any]
    tolerances: ParityTolerances
    passed: bool
    cpu: CpuInfo | None = None


class Signature(Section):
    algorithm: Literal["ed25519"]
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    value: str


class SelfTestImage(Section):
    file: str
    score: float


class SelfTest(Section):
    images: list[SelfTestImage] = Field(min_length=1)
    min_rank_corr: float
    max_score_error: float


class DriftReference(Section):
    """What the line looked like in training, for the station's drift monitor (runtime.station.drift).

    ``score_quantiles`` are the held-out normal scores' quantiles at ``levels``, normalised as the
    runtime normalises scores (threshold 0.5); ``global_stats`` the training images' whole-image
    statistics (mean, spread).
    """

    levels: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(min_length=3)
    score_quantiles: list[float]
    n_scores: int = Field(ge=1)
    global_stats: GlobalStats | None = None

    @field_validator("score_quantiles")
    @classmethod
    def _ascending(cls, values: list[float]) -> list[float]:
        if any(b < a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError("must be in ascending order")
        return values


class Manifest(Section):
    _omitted_when_none = frozenset({"name", "parity", "device_profile", "signature", "self_test", "drift_reference",
                                    "capture"})

    format: Literal["edge-anomaly-bundle"]
    schema_version: Literal[4]
    name: str | None = None
    created: str
    edge_anomaly_version: str
    template: str
    engine: Engine
    input: InputSpec
    outputs: dict[str, str]
    scoring: Scoring
    concepts: list[str]
    model: dict[str, Any] = Field(description="the trained model's params, info and versions, as recorded")
    parity: Parity | None = None
    device_profile: str | None = None
    files: dict[FileName, Sha256] = Field(default_factory=dict,
                                          description="file name -> SHA-256 of every other file")
    signature: Signature | None = None
    self_test: SelfTest | None = None
    drift_reference: DriftReference | None = None
    capture: CaptureSection | None = None


def _v1_to_v2(data: dict) -> dict:
    """Version 1 read a missing ``engine.batch`` as dynamic up to 32 and a batch without ``dynamic`` as dynamic."""
    engine = dict(data.get("engine") or {})
    batch = dict(engine.get("batch") or {"max": 32})
    batch.setdefault("dynamic", True)
    if batch["dynamic"]:
        batch = {"dynamic": True, "max": batch.get("max", 32)}
    return {**data, "schema_version": 2, "engine": {**engine, "batch": batch}}


def _v2_to_v3(data: dict) -> dict:
    """Version 3 only adds the optional ``drift_reference``: a version 2 manifest is one without it."""
    return {**data, "schema_version": 3}


def _v3_to_v4(data: dict) -> dict:
    """Version 4 only adds the optional ``capture`` and the scoring's optional noise and compression checks."""
    return {**data, "schema_version": 4}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def migrate(data: dict, source: str = MANIFEST) -> dict:
    """``data`` upgraded to :data:`SCHEMA_VERSION`, one version at a time."""
    return upgrade(data, SCHEMA_VERSION, MIGRATIONS, source, BundleError)


def _resolve_numeric_sections() -> None:
    """Give :class:`Manifest` its ``scoring`` and statistics types (``runtime.scoring``, ``runtime.global_stats``)
    before the first manifest is validated, so that importing this module (the engine table, PRECISIONS, the
    device profiles) loads no numpy."""
    if not Manifest.__pydantic_complete__:
        from runtime.global_stats import GlobalStats
        from runtime.scoring import Scoring

        for model in (DriftReference, Manifest):
            model.model_rebuild(_types_namespace={"GlobalStats": GlobalStats, "Scoring": Scoring})


def parse_manifest(data: object, source: str = MANIFEST) -> Manifest:
    """A manifest of any supported version as the current :class:`Manifest`; errors name the field."""
    _resolve_numeric_sections()
    if not isinstance(data, dict):
        raise BundleError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{source}: format is {data.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    return validate(Manifest, migrate(data, source), source, "bundle manifest", BundleError)


def decode_manifest(text: str | bytes, source: str = MANIFEST) -> dict:
    """The JSON object in a manifest's text, as written (bounded in size before it is decoded).

    Signatures are checked on this object (``runtime.signing``), before it is migrated or typed.
    """
    return decode_json_object(text, source, "manifest", MAX_MANIFEST_BYTES, BundleError)


def load_manifest(text: str | bytes, source: str = MANIFEST) -> Manifest:
    """Parse the JSON text of a manifest (bounded in size before it is decoded)."""
    return parse_manifest(decode_manifest(text, source), source)


def dump(manifest: Manifest) -> str:
    """The manifest's JSON text as written into a bundle."""
    return json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
