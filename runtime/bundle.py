"""The deployable bundle: engine file(s) plus ``manifest.json``, as a folder or a ``.tar``.

The manifest carries everything the edge needs besides the engine: input size and colour
order, threshold and score normalisation, concept names, what was quantised, the parity
figures measured at export, and the SHA-256 of every file. A bundle whose files do not match
their hashes is refused before any engine touches them. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

BUNDLE_FORMAT = "edge-anomaly-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENGINE_FORMATS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class BundleError(ValueError):
    """A bundle that cannot be trusted or used; the message names the file or field."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest."""

    folder: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.folder.name)

    @property
    def engine(self) -> dict:
        return self.manifest["engine"]

    @property
    def input_size(self) -> tuple[int, int]:
        height, width = self.manifest["input"]["size"]
        return int(height), int(width)

    @property
    def hash(self) -> str:
        """Identity of the whole bundle: the manifest lists every file's hash."""
        return sha256_file(self.folder / MANIFEST)

    def path(self, role: str) -> Path:
        """The file that plays ``role`` (model, weights, onnx, ...) in the engine section."""
        try:
            return self.folder / self.engine["files"][role]
        except KeyError:
            raise BundleError(f"{self.folder / MANIFEST}: engine.files has no {role!r} entry") from None


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a bundle tar, refusing links and paths that leave the target folder."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            destination = (target / member.name).resolve()
            if not member.isfile() and not member.isdir():
                raise BundleError(f"{archive}: member {member.name!r} is not a plain file")
            if target.resolve() not in destination.parents and destination != target.resolve():
                raise BundleError(f"{archive}: member {member.name!r} escapes the bundle folder")
        tar.extractall(target, filter="data")


def open_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or ``.tar`` and verify every file against the manifest.

    A ``.tar`` is extracted into a temporary folder that lives as long as the returned Bundle
    (a daemon swapping bundles for months must not fill the disk).
    """
    path = Path(path)
    if not (path.is_file() and tarfile.is_tarfile(path)):
        return _verified(path)
    folder = Path(tempfile.mkdtemp(prefix="edge-anomaly-bundle-"))
    try:
        _safe_extract(path, folder)
        inner = [p for p in folder.iterdir() if p.is_dir()]
        bundle = _verified(inner[0] if not (folder / MANIFEST).is_file() and len(inner) == 1 else folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(bundle, shutil.rmtree, folder, ignore_errors=True)
    return bundle


def _verified(path: Path) -> Bundle:
    """The bundle in folder ``path``, once its manifest and every file's hash check out."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {manifest.get('schema_version')!r} is not supported "
                          f"(this runtime reads {SCHEMA_VERSION})")
    for field in ("engine", "input", "scoring", "files"):
        if field not in manifest:
            raise BundleError(f"{manifest_path}: missing field {field!r}")
    files = manifest["files"]
    for role, name in manifest["engine"].get("files", {}).items():
        if name not in files:
            raise BundleError(f"{manifest_path}: engine file {name!r} ({role}) has no hash under 'files'")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(f"{file}: SHA-256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                              "the bundle was modified or corrupted")
    return Bundle(path, manifest)
