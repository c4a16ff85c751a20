"""Bundle tars and signatures with the standard library only: this file also runs under the distribution's
own python3 (Debian 12: 3.11.2, no ``tarfile.data_filter``), see .ci/run, so it uses no conftest fixture.

The bundles here are small but real: the manifest of the version-1 fixture bundle (fixtures/bundle-v1, written by
the exporter) listing one file's SHA-256, as ``write_bundle`` makes them.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from runtime.bundle import MANIFEST, BundleError, open_bundle, pack_bundle

FIXTURE_MANIFEST = Path(__file__).parent / "fixtures" / "bundle-v1" / MANIFEST


def make_bundle(folder: Path, payload: bytes = b"\x08\x01engine bytes", name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True)
    (folder / name).write_bytes(payload)
    manifest = json.loads(FIXTURE_MANIFEST.read_text())
    manifest.update(name=folder.name, files={name: hashlib.sha256(payload).hexdigest()})
    manifest["engine"]["files"] = {"model": name}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, size: int | None = None,
        link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if size is None else size, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_a_plain_tar_opens_on_this_python_and_its_extraction_goes_with_the_bundle(tmp_path):
    folder = make_bundle(tmp_path / "good")
    archive = pack_bundle(folder, tmp_path / "good.tar")
    bundle = open_bundle(archive)
    extracted = bundle.folder
    assert (extracted / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    assert sorted(p.name for p in extracted.iterdir()) == ["manifest.json", "model.onnx"]
    del bundle
    gc.collect()
    assert not extracted.exists()


def _hostile(tmp_path: Path, build, mode: str = "w") -> Path:
    folder = make_bundle(tmp_path / "src")
    archive = tmp_path / ("hostile.tar" + ("" if mode == "w" else "." + mode.split(":")[1]))
    with tarfile.open(archive, mode) as tar:
        add(tar, "b/manifest.json", (folder / MANIFEST).read_bytes())
        add(tar, "b/model.onnx", (folder / "model.onnx").read_bytes())
        build(tar)
    return archive


@pytest.mark.parametrize(("build", "message"), [
    (lambda tar: add(tar, "b/extra.bin", b"x" * 1000), "not listed in the manifest"),
    (lambda tar: add(tar, "../../evil", b"x"), "absolute, '..' or nested"),
    (lambda tar: add(tar, "/etc/evil", b"x"), "absolute, '..' or nested"),
    (lambda tar: add(tar, "b/sub/deep", b"x"), "absolute, '..' or nested"),
    (lambda tar: add(tar, "b/link", b"", tarfile.SYMTYPE, link="/etc/shadow"), "not a plain file"),
    (lambda tar: add(tar, "b/model.onnx", b"again"), "appears twice"),
])
def test_hostile_members_are_refused_before_anything_is_written(tmp_path, build, message, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    with pytest.raises(BundleError, match=message):
        open_bundle(_hostile(tmp_path, build))
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_a_compressed_tar_is_refused_even_with_a_valid_bundle_inside(tmp_path):
    archive = _hostile(tmp_path, lambda tar: None, mode="w:gz")
    with pytest.raises(BundleError, match="not a plain .tar bundle"):
        open_bundle(archive)


@pytest.mark.parametrize("name", ["/etc/shadow", "../../etc/shadow", "sub/x", ".."])
def test_manifest_file_names_outside_the_bundle_are_refused_without_reading_them(tmp_path, name):
    folder = make_bundle(tmp_path / "b")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = "0" * 64
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a plain name inside the bundle folder") as error:
        open_bundle(folder)
    assert "SHA-256" not in str(error.value)  # no hash of a file outside the bundle is ever computed


def test_signatures_name_the_key_for_unsigned_foreign_and_modified_bundles(tmp_path):
    signing = pytest.importorskip("runtime.signing")
    ours_key, ours_pub, ours_id = signing.new_key_pair(tmp_path / "ours")
    _, _, theirs_id = signing.new_key_pair(tmp_path / "theirs")
    trust = signing.TrustList.load([ours_pub])
    folder = make_bundle(tmp_path / "b")
    archive = pack_bundle(folder, tmp_path / "b.tar")

    with pytest.raises(BundleError, match=f"unsigned.*{ours_id}"):
        open_bundle(archive, trust.verify)
    assert signing.sign_bundle(folder, signing.load_private_key(ours_key)) == ours_id
    assert open_bundle(archive, trust.verify).manifest.signature.key_id == ours_id  # the .tar twin too
    assert len(ours_id) == 16 and (ours_key.stat().st_mode & 0o777) == 0o600

    signing.sign_bundle(archive, signing.load_private_key(tmp_path / "theirs" / f"{theirs_id}.key"))
    with pytest.raises(BundleError, match=f"signed by key {theirs_id}, which this station does not trust"):
        open_bundle(archive, trust.verify)

    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["scoring"]["local"]["threshold"] = 1e9  # the attack: a threshold nothing reaches
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"signature by key {ours_id} does not match"):
        open_bundle(folder, trust.verify)
