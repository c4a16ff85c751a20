"""Writing a bundle: engine files, ``manifest.json`` with every file's hash, and a ``.tar`` twin."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import edge_anomaly
from edge_anomaly.model import TrainedModel
from runtime.bundle import pack_bundle, sha256_file
from runtime.global_stats import GlobalStats
from runtime.manifest import BUNDLE_FORMAT, MANIFEST, SCHEMA_VERSION, Manifest, dump, parse_manifest

DRIFT_LEVELS = np.linspace(0.0, 1.0, 21)  # quantiles of the held-out normal scores kept for the drift monitor


def drift_reference(model: TrainedModel) -> dict | None:
    """The manifest's ``drift_reference`` from the model's calibration data (None for models without it).

    Scores are normalised with the model's own scale: the runtime's normalised scores of any
    engine (aligned for reduced precision) are on the same scale.
    """
    data = model.calibration_data
    if data is None:
        return None
    scores = model.scoring.local.normalize(data.normal_scores)
    return {"levels": DRIFT_LEVELS.tolist(), "score_quantiles": np.quantile(scores, DRIFT_LEVELS).tolist(),
            "n_scores": int(scores.size), "global_stats": GlobalStats.fit(data.image_stats)}


def build_manifest(model: TrainedModel, engine: dict, name: str, **sections) -> Manifest:
    """What the runtime needs to decide like the model; ``sections`` adds parity, device_profile, ...
    or replaces one (``scoring``, with a reduced-precision engine's aligned local scale).

    The model card's sections are the manifest's types and go in as they are. The file hashes
    are added by :func:`write_bundle`.
    """
    card = model.card()
    return parse_manifest({
        "format": BUNDLE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edge_anomaly_version": edge_anomaly.__version__,
        "template": model.template,
        "engine": engine,
        "input": card.input,
        "outputs": card.outputs,
        "scoring": card.scoring,
        "concepts": card.concepts,
        "model": {"params": card.params, "info": card.info, "versions": card.versions},
        "drift_reference": drift_reference(model),
        "capture": card.capture,
        **sections,
    }, f"manifest of bundle {name!r}")


def write_bundle(folder: Path, manifest: Manifest | dict) -> tuple[Path, Path]:
    """Hash every file in ``folder``, write the manifest, and pack ``<folder>.tar``.

    A plain dict is validated as a manifest first. Returns (folder, tar path).
    """
    folder = Path(folder)
    if not isinstance(manifest, Manifest):
        manifest = parse_manifest(manifest, str(folder / MANIFEST))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = manifest.model_copy(update={"files": {p.name: sha256_file(p) for p in files}})
    (folder / MANIFEST).write_text(dump(manifest))
    return folder, pack_bundle(folder, folder.with_name(folder.name + ".tar"))
