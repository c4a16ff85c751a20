"""The deployable bundle: engine file(s) plus ``manifest.json``, as a folder or a ``.tar``.

The manifest carries everything the edge needs besides the engine: input size and colour
order, threshold and score normalisation, concept names, what was quantised, the parity
figures measured at export, and the SHA-256 of every file. A bundle whose files do not match
their hashes is refused before any engine touches them. No pickle anywhere.

What runs is what was checked: every file is hashed as it is copied into a private folder (a
``.tar`` is extracted there), and engines open that copy, so rewriting the bundle's own folder
after the check changes nothing that runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    BundleError,
    Engine,
    Manifest,
    decode_manifest,
    load_manifest,
    parse_manifest,
)

__all__ = ["Bundle", "BundleError", "open_bundle", "sha256_file"]  # BundleError lives with the manifest's schema


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: ``folder`` is the private copy its files were hashed into (what engines open),
    ``source`` the folder or ``.tar`` it was opened from (what messages name)."""

    folder: Path
    manifest: Manifest
    source: Path

    @property
    def name(self) -> str:
        return self.manifest.name or self.source.name.removesuffix(".tar")

    @property
    def engine(self) -> Engine:
        return self.manifest.engine

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input.size

    @property
    def hash(self) -> str:
        """Identity of the whole bundle: the manifest lists every file's hash."""
        return sha256_file(self.folder / MANIFEST)

    def path(self, role: str) -> Path:
        """The file that plays ``role`` (model, weights, onnx, ...) in the engine section."""
        try:
            return self.folder / self.engine.files[role]
        except KeyError:
            raise BundleError(f"{self.folder / MANIFEST}: engine.files has no {role!r} entry") from None


MAX_MEMBERS = 256
ManifestCheck = Callable[[dict, Path], None]
"""``check(manifest, manifest_path)`` gets the manifest's JSON object exactly as ``manifest.json`` holds it
(not migrated, not re-serialised): the bytes a signature covers are computed from that."""


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
        manifest = load_manifest(tar.extractfile(manifest_member).read(), f"{archive}:{MANIFEST}")
        listed = set(manifest.files)
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
    """Open a bundle folder or ``.tar``, verify every file against the manifest, and keep the verified copy.

    ``check(manifest, manifest_path)`` runs before any file is hashed (the station's signature
    check: a bundle nobody trusted is refused before its files are even read). The files are
    hashed while they are copied (a ``.tar`` while it is extracted) into a private temporary folder
    that lives as long as the returned Bundle (a daemon swapping bundles for months must not fill
    the disk); the Bundle points at that copy, never back at ``path``.
    """
    path = Path(path)
    private = Path(tempfile.mkdtemp(prefix="edge-anomaly-bundle-"))
    try:
        if path.is_file():
            _extract(path, private)
            bundle = _verified(private, check, source=path)
        else:
            bundle = _verified(path, check, source=path, into=private)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    weakref.finalize(bundle, shutil.rmtree, private, ignore_errors=True)
    return bundle


def _copy_hashed(source: Path, target: Path) -> str:
    """Copy a regular file (never through a link) and return the SHA-256 of exactly the bytes written."""
    digest = hashlib.sha256()
    try:
        handle = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise BundleError(f"{source}: listed in the manifest but cannot be read ({exc.strerror or exc})") from None
    with open(handle, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise BundleError(f"{source}: listed in the manifest but not a regular file")
        try:
            with open(target, "xb") as writer:
                for block in iter(lambda: reader.read(1 << 20), b""):
                    digest.update(block)
                    writer.write(block)
        except OSError as exc:
            raise BundleError(f"{source}: cannot copy it into {target.parent} to verify it "
                              f"({exc.strerror or exc})") from None
    return digest.hexdigest()


def _verified(path: Path, check: ManifestCheck | None = None, source: Path | None = None,
              into: Path | None = None) -> Bundle:
    """The bundle in folder ``path``, once its manifest (and ``check``) and every file's hash check out.

    With ``into``, each file is copied there as it is hashed and the Bundle is the copy; without it
    ``path`` must already be private (an extracted tar)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{source or path}: not a bundle (no {MANIFEST})")
    with open(manifest_path, "rb") as handle:  # bounded: decode_manifest refuses what is longer than a manifest
        text = handle.read(MAX_MANIFEST_BYTES + 1)
    raw = decode_manifest(text, str(manifest_path))
    if check is not None:  # on the file's own JSON, before anything in it is acted on
        check(raw, manifest_path)
    manifest = parse_manifest(raw, str(manifest_path))
    for role, name in manifest.engine.files.items():
        if name not in manifest.files:
            raise BundleError(f"{manifest_path}: engine file {name[:80]!r} ({role}) has no hash under 'files'")
    for name, expected in manifest.files.items():
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing (or not a regular file)")
        actual = _copy_hashed(file, into / name) if into is not None else sha256_file(file)
        if actual != expected:
            raise BundleError(f"{file}: SHA-256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                              "the bundle was modified or corrupted")
    if into is not None:
        (into / MANIFEST).write_bytes(text)  # the very bytes that were checked (and signed)
    return Bundle(into or path, manifest, source or path)
