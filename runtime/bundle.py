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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUNDLE_FORMAT = "edge-anomaly-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENGINE_FORMATS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


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


MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB; a bigger one is not a bundle
MAX_MEMBERS = 256
ManifestCheck = Callable[[dict, Path], None]


def check_file_name(name: object, where: str) -> str:
    """A bundle file name: one plain name inside the bundle folder (no folder, no ``..``, not absolute).

    Names come from the manifest and the tar, i.e. from whoever made the bundle: a name such as
    ``/etc/shadow`` or ``../x`` must never reach ``open()``, nor an error message about its hash.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or name != name.strip():
        raise BundleError(f"{where}: file name {str(name)[:80]!r} is not a plain name inside the bundle folder")
    return name


def _member_name(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's file name within the bundle: ``name`` or ``<folder>/name``, nothing deeper."""
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts or len(parts) > 2 or "" in parts:
        raise BundleError(f"{archive}: member {member.name[:80]!r} is not a bundle file (absolute, '..' or nested)")
    return parts[-1]


def _extract(archive: Path, target: Path) -> None:
    """Extract a bundle tar member by member, on any Python >= 3.10 (no ``tarfile`` extraction filter needed).

    Only a plain (uncompressed) tar of one flat folder is taken: a manifest of at most
    ``MAX_MANIFEST_BYTES`` and exactly the files it lists, each once, regular files only. Nothing
    is written before every member header has passed, and nothing unlisted is ever written.
    """
    try:
        tar = tarfile.open(archive, "r:")  # plain tar only: compressed tars are not the bundle format
    except tarfile.ReadError as exc:
        raise BundleError(f"{archive}: not a plain .tar bundle ({exc}); compressed archives are refused") from None
    with tar:
        members: dict[str, tarfile.TarInfo] = {}
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise BundleError(f"{archive}: more than {MAX_MEMBERS} members; not a bundle")
            if member.isdir() and "/" not in member.name.strip("/") and ".." not in member.name:
                continue
            name = _member_name(member, archive)
            if not member.isfile():
                raise BundleError(f"{archive}: member {member.name[:80]!r} is not a plain file")
            if name in members:
                raise BundleError(f"{archive}: member {name!r} appears twice")
            members[name] = member
        manifest_member = members.get(MANIFEST)
        if manifest_member is None:
            raise BundleError(f"{archive}: not a bundle (no {MANIFEST})")
        if manifest_member.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{archive}: {MANIFEST} is {manifest_member.size} bytes (limit {MAX_MANIFEST_BYTES})")
        manifest = _parse_manifest(tar.extractfile(manifest_member).read(), f"{archive}:{MANIFEST}")
        listed = set(_listed_files(manifest, f"{archive}:{MANIFEST}"))
        unlisted = sorted(set(members) - listed - {MANIFEST})
        if unlisted:
            raise BundleError(f"{archive}: member(s) {', '.join(repr(n[:80]) for n in unlisted[:5])} are not listed "
                              f"in the manifest")
        needed = sum(member.size for member in members.values())
        free = shutil.disk_usage(target).free
        if needed > free:
            raise BundleError(f"{archive}: needs {needed} bytes to extract, {free} free in {target}")
        for name, member in members.items():
            with tar.extractfile(member) as source, open(target / name, "xb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def pack_bundle(folder: Path, archive: Path, top: str | None = None) -> Path:
    """Pack a bundle folder's files as ``archive``: one flat folder (named ``top``, default the folder's
    name) with the manifest last; written beside and renamed, so a reader never sees half a tar."""
    top = top or folder.name
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        for file in [*files, folder / MANIFEST]:
            tar.add(file, arcname=f"{top}/{file.name}")
    partial.replace(archive)
    return archive


def open_bundle(path: str | Path, check: ManifestCheck | None = None) -> Bundle:
    """Open a bundle folder or ``.tar`` and verify every file against the manifest.

    ``check(manifest, manifest_path)`` runs before any file is hashed (the station's signature
    check: a bundle nobody trusted is refused before its files are even read). A ``.tar`` is
    extracted into a temporary folder that lives as long as the returned Bundle (a daemon
    swapping bundles for months must not fill the disk).
    """
    path = Path(path)
    if not path.is_file():
        return _verified(path, check)
    folder = Path(tempfile.mkdtemp(prefix="edge-anomaly-bundle-"))
    try:
        _extract(path, folder)
        bundle = _verified(folder, check)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(bundle, shutil.rmtree, folder, ignore_errors=True)
    return bundle


def _parse_manifest(data: bytes, where: str) -> dict:
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{where}: invalid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _listed_files(manifest: dict, where: str) -> dict[str, str]:
    """The manifest's ``files`` (name -> SHA-256), every name checked to stay inside the bundle."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{where}: 'files' must map file names to SHA-256 hashes")
    for name, digest in files.items():
        check_file_name(name, f"{where} files")
        if not isinstance(digest, str):
            raise BundleError(f"{where}: files[{name!r}] must be a SHA-256 hex string")
    return files


def _verified(path: Path, check: ManifestCheck | None = None) -> Bundle:
    """The bundle in folder ``path``, once its manifest (and ``check``) and every file's hash check out."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: larger than {MAX_MANIFEST_BYTES} bytes; not a bundle manifest")
    manifest = _parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {manifest.get('schema_version')!r} is not supported "
                          f"(this runtime reads {SCHEMA_VERSION})")
    for field in ("engine", "input", "scoring", "files"):
        if field not in manifest:
            raise BundleError(f"{manifest_path}: missing field {field!r}")
    files = _listed_files(manifest, str(manifest_path))
    for role, name in manifest["engine"].get("files", {}).items():
        if name not in files:
            raise BundleError(f"{manifest_path}: engine file {str(name)[:80]!r} ({role}) has no hash under 'files'")
    if check is not None:
        check(manifest, manifest_path)
    for name, expected in files.items():
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing (or not a regular file)")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(f"{file}: SHA-256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                              "the bundle was modified or corrupted")
    return Bundle(path, manifest)
