"""``model.json``, the trained model's card, typed like the bundle manifest beside it.

The card's ``input``, ``scoring`` (with its global statistics) and ``capture`` sections are the
manifest's own types (``runtime.manifest``, ``runtime.scoring``), so the threshold a fit chose is
the one object the exporter copies into a bundle and the station decides with. Unknown keys are
refused in every typed section; ``params`` is checked by the template's own params class on load,
``info`` (training-set fingerprint, timings, calibration record) is free-form. :func:`read_card`
upgrades older cards step by step, so models saved before still load.

Version history: 1, the first format (the capture profile inside ``info``). 2 moves it into the
card's own ``capture`` section, where the manifest has it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from runtime.manifest import CaptureSection, FileName, InputSpec, Sha256
from runtime.schema import Section, decode_json_object, upgrade, validate
from runtime.scoring import Scoring

MODEL_FORMAT = "edge-anomaly-model"
SCHEMA_VERSION = 2
METADATA_FILE = "model.json"
MAX_CARD_BYTES = 16 << 20  # a card is a few kB (more with a long training record); anything near this is not one
OUTPUTS = {"heatmap": "raw score per input pixel [N, H, W]", "score": "raw image score [N]"}


class ModelCard(Section):
    _omitted_when_none = frozenset({"capture"})

    format: Literal["edge-anomaly-model"]
    schema_version: Literal[2]
    template: str
    params: dict[str, Any] = Field(description="the template's hyperparameters, as its params class dumps them")
    input: InputSpec
    outputs: dict[str, str]
    scoring: Scoring
    concepts: list[str]
    capture: CaptureSection | None = None  # absent in models made before it was recorded
    info: dict[str, Any] = Field(description="training-set fingerprint, timings, calibration record, updates")
    versions: dict[str, str]
    files: dict[FileName, Sha256] = Field(default_factory=dict, description="file name -> SHA-256 of each file")


def _v1_to_v2(data: dict) -> dict:
    """Version 1 kept the capture profile in ``info``; version 2 has it as its own section."""
    info = dict(data.get("info") or {})
    capture = info.pop("capture", None)
    return {**data, "schema_version": 2, "info": info, **({"capture": capture} if capture else {})}


MIGRATIONS = {1: _v1_to_v2}


def read_card(path: Path) -> ModelCard:
    """The card in ``path`` (any supported version) as the current :class:`ModelCard`; errors name the field."""
    with path.open("rb") as file:
        text = file.read(MAX_CARD_BYTES + 1)  # bounded before it is decoded
    data = decode_json_object(text, str(path), "model card", MAX_CARD_BYTES)
    if data.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an edge-anomaly model (format {data.get('format')!r}, "
                         f"expected {MODEL_FORMAT!r})")
    return validate(ModelCard, upgrade(data, SCHEMA_VERSION, MIGRATIONS, str(path)), str(path), "model card")


def write_card(path: Path, card: ModelCard) -> None:
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2))
