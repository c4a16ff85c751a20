"""Ed25519 signatures over bundle manifests (and package checksums): who made a bundle, not only what is in it.

A bundle's manifest lists the SHA-256 of every file, so signing the manifest signs the bundle.
The signed bytes are the canonical manifest: the manifest without its ``signature`` key, as
``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. The signature
is stored in the manifest itself::

    "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64 of 64 bytes>"}

``key_id`` is the first 16 hex characters of the SHA-256 of the raw 32-byte public key. A station
with a ``trust:`` list refuses a bundle that is unsigned, signed by a key it does not list, or
whose manifest changed after signing; every refusal names the key id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime.bundle import MANIFEST, BundleError, open_bundle, pack_bundle
from runtime.manifest import dump, parse_manifest

ALGORITHM = "ed25519"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


class SigningKeyError(ValueError):
    """A key file that cannot be used; the message names the file."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_key_pair(folder: str | Path) -> tuple[Path, Path, str]:
    """Write ``<key id>.key`` (private, PKCS#8 PEM, mode 0600) and ``<key id>.pub`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    ident = key_id(private.public_key())
    private_path, public_path = folder / f"{ident}{PRIVATE_SUFFIX}", folder / f"{ident}{PUBLIC_SUFFIX}"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, ident


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read signing key ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key (edge-anomaly keys new makes one)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read public key ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SigningKeyError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key


def canonical(manifest: dict) -> bytes:
    """The bytes a signature covers: the manifest without ``signature``, keys sorted, no spaces."""
    unsigned = {key: value for key, value in manifest.items() if key != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_manifest(manifest: dict, private_key: Ed25519PrivateKey) -> dict:
    """``manifest`` with a fresh ``signature`` (any earlier one is replaced)."""
    value = base64.b64encode(private_key.sign(canonical(manifest))).decode("ascii")
    return {**manifest, "signature": {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
                                      "value": value}}


class TrustList:
    """The public keys a station accepts bundles from, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(key): key for key in keys}

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> TrustList:
        return cls(load_public_key(path) for path in paths)

    def describe(self) -> str:
        return ", ".join(sorted(self.keys)) or "none"

    def verify(self, manifest: dict, where: object) -> str:
        """The signing key id when ``manifest`` carries a valid signature by a trusted key; BundleError otherwise."""
        signature = manifest.get("signature")
        if signature is None:
            raise BundleError(f"{where}: bundle is unsigned; this station only runs bundles signed by "
                              f"key(s) {self.describe()} (edge-anomaly sign BUNDLE --key KEY)")
        if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
            raise BundleError(f"{where}: signature must be {{'algorithm': 'ed25519', 'key_id', 'value'}}")
        ident = signature.get("key_id")
        key = self.keys.get(ident) if isinstance(ident, str) else None
        if key is None:
            raise BundleError(f"{where}: signed by key {str(ident)[:16]}, which this station does not trust "
                              f"(trusted: {self.describe()})")
        try:
            key.verify(base64.b64decode(str(signature.get("value")), validate=True), canonical(manifest))
        except (InvalidSignature, binascii.Error, ValueError):
            raise BundleError(f"{where}: signature by key {ident} does not match the manifest "
                              "(changed after signing, or forged)") from None
        return ident


def sign_file(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """A raw 64-byte Ed25519 signature, as ``openssl pkeyutl -verify -rawin`` checks it (package SHA256SUMS)."""
    return private_key.sign(data)


def sign_bundle(path: str | Path, private_key: Ed25519PrivateKey) -> str:
    """Sign a bundle folder or ``.tar`` in place after verifying its hashes; returns the key id.

    The manifest is written as :func:`runtime.manifest.dump` writes it (a version-1 manifest becomes
    version 2) and signed as written: the text is checked to verify before it replaces the old one.
    A folder's ``.tar`` twin (as ``export`` writes it) is re-packed with the signed manifest too.
    """
    path = Path(path)
    bundle = open_bundle(path)  # hashes first: never sign a bundle that is already broken
    unsigned = bundle.manifest.model_copy(update={"signature": None}).model_dump(mode="json")
    text = dump(parse_manifest(sign_manifest(unsigned, private_key), str(path / MANIFEST)))
    ident = TrustList([private_key.public_key()]).verify(json.loads(text), path)
    if path.is_dir():
        (path / MANIFEST).write_text(text)
        twin = path.with_name(path.name + ".tar")
        if twin.is_file():
            pack_bundle(path, twin, path.name)
    else:
        with tempfile.TemporaryDirectory(prefix="edge-anomaly-sign-") as scratch:
            folder = Path(scratch) / path.name.removesuffix(".tar")
            shutil.copytree(bundle.folder, folder)
            (folder / MANIFEST).write_text(text)
            pack_bundle(folder, path, folder.name)
    return ident
