"""A bundle .tar is extracted for as long as it is used, and a refused one leaves nothing behind."""

from __future__ import annotations

import gc
import io
import tarfile

import pytest

from runtime.bundle import BundleError, open_bundle


def test_tar_extraction_lives_as_long_as_the_bundle(board_bundle):
    bundle = open_bundle(board_bundle[1])
    folder = bundle.folder
    assert (folder / "manifest.json").is_file() and folder != board_bundle[0]
    del bundle
    gc.collect()
    assert not folder.exists()


def test_a_tampered_tar_is_refused_and_its_extraction_removed(board_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(board_bundle[1]) as source, tarfile.open(tampered, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.endswith(".onnx"):
                content = bytearray(data.read())
                content[-1] ^= 0xFF
                member.size = len(content)
                data = io.BytesIO(bytes(content))
            target.addfile(member, data)
    with pytest.raises(BundleError, match=r"model\.onnx: SHA-256 mismatch"):
        open_bundle(tampered)
    assert list((tmp_path / "scratch").iterdir()) == []
