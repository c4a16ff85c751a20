"""Writing a bundle: engine files, ``manifest.json`` with every file's hash, and a ``.tar`` twin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import edge_anomaly
from edge_anomaly.model import TrainedModel
from runtime.bundle import BUNDLE_FORMAT, MANIFEST, SCHEMA_VERSION, pack_bundle, sha256_file


def build_manifest(model: TrainedModel, engine: dict, name: str) -> dict:
    """Everything but the file hashes and parity: what the runtime needs to decide like the model."""
    meta = model.metadata()
    return {
        "format": BUNDLE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edge_anomaly_version": edge_anomaly.__version__,
        "template": model.template,
        "engine": engine,
        "input": {**meta["input"], "roi": None, "center_crop": None},
        "outputs": meta["outputs"],
        "scoring": meta["scoring"],
        "concepts": meta["concepts"],
        "model": {"params": meta["params"], "info": meta["info"], "versions": meta["versions"]},
    }


def write_bundle(folder: Path, manifest: dict) -> tuple[Path, Path]:
    """Hash every file in ``folder``, write the manifest, and pack ``<folder>.tar``.

    Returns (folder, tar path).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {**manifest, "files": {p.name: sha256_file(p) for p in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder, pack_bundle(folder, folder.with_name(folder.name + ".tar"))
