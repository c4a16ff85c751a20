"""``edge-anomaly package``: one verified tar per board, and its install.sh sets up a running station."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from device_helpers import intel_core_cpu_here, run_cli

from runtime.bundle import open_bundle
from runtime.image_io import list_images
from runtime.station.config import load_config

pytestmark = pytest.mark.slow  # packages and installs a station into a fresh venv: not in -m "not slow"


def _package(bundle: Path, profile: str, out: Path, *flags: str) -> tuple[int, str]:
    return run_cli("package", str(bundle), "--device", profile, *flags, "--out", str(out))


def _extract(archive: Path, folder: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def test_package_holds_the_verified_bundle_config_unit_script_and_wheel(device_export, tmp_path, monkeypatch):
    folder, _ = device_export("generic-x86-64")
    code, output = _package(folder, "generic-x86-64", tmp_path / "station.tar")
    assert code == 0, output
    with tarfile.open(tmp_path / "station.tar") as tar:
        names = set(tar.getnames())
        assert tar.getmember("install.sh").mode == 0o755
    bundle = f"bundles/{folder.name}.tar"
    assert names == {bundle, "station.yaml", "edge-anomaly.service", "install.sh", "profile.yaml", "SHA256SUMS",
                     "wheels/edge_anomaly-0.1.0-py3-none-any.whl"}
    root = _extract(tmp_path / "station.tar", tmp_path / "box")
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    assert (root / bundle).read_bytes() == folder.with_name(folder.name + ".tar").read_bytes()
    assert open_bundle(root / bundle).engine.format == "onnx"  # every file's hash verifies
    monkeypatch.setenv("MQTT_PASSWORD", "not used")  # the example config names it
    config = load_config(root / "station.yaml")  # the example station, every camera on the packaged bundle
    assert [c.bundle for c in config.cameras] == [root / bundle] * 3
    assert {(c.backend, c.device, c.threads) for c in config.cameras} == {("onnxruntime", "CPU", 4)}
    script = (root / "install.sh").read_text()
    assert '"./wheels/edge_anomaly-0.1.0-py3-none-any.whl[onnxruntime,daemon]"' in script
    assert re.search(r"@[A-Z_]+@", script) is None  # every placeholder filled
    assert "ReadWritePaths=/var/lib/edge-anomaly /srv/ftp/label-cam" in (root / "edge-anomaly.service").read_text()


def test_package_refuses_what_the_board_cannot_run(device_export, tmp_path):
    openvino, _ = device_export("intel-core-cpu", *intel_core_cpu_here()[0])
    code, output = _package(openvino, "jetson-orin-nano", tmp_path / "a.tar")
    assert code == 2 and "'jetson-orin-nano' runs tensorrt or onnxruntime, which cannot run a openvino bundle" in output
    dynamic, _ = device_export("generic-x86-64")
    code, output = _package(dynamic, "intel-core-ultra-npu", tmp_path / "b.tar")
    assert code == 2 and "needs static shapes" in output
    tampered = tmp_path / "tampered"
    shutil.copytree(dynamic, tampered)
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes()[:-1] + b"\0")
    with tarfile.open(tmp_path / "tampered.tar", "w") as tar:
        tar.add(tampered, arcname="tampered")
    code, output = _package(tampered, "generic-x86-64", tmp_path / "c.tar")
    assert code == 2 and "SHA-256 mismatch" in output
    assert not any((tmp_path / name).exists() for name in ("a.tar", "b.tar", "c.tar"))


def test_a_bundle_for_the_fallback_engine_is_packaged_with_a_warning(device_export, tmp_path, caplog):
    onnx, _ = device_export("generic-x86-64")
    wheel = tmp_path / "edge_anomaly-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel built elsewhere")
    code, output = _package(onnx, "jetson-orin-nano", tmp_path / "jetson.tar", "--wheel", str(wheel))
    assert code == 0, output
    assert "profile jetson-orin-nano exports tensorrt bundles; this onnx bundle will run on onnxruntime CUDA" in (
        caplog.text)
    box = _extract(tmp_path / "jetson.tar", tmp_path / "box")
    assert (box / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert 'VENV_FLAGS="--system-site-packages"' in (box / "install.sh").read_text()
    camera = yaml.safe_load((box / "station.yaml").read_text())["cameras"][0]
    assert (camera["backend"], camera["device"], camera["threads"]) == ("onnxruntime", "CUDA", 4)


def _signed_copy(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the bundle (folder and .tar twin) signed with a new key; returns (private, public) key paths."""
    code, output = run_cli("keys", "new", "--out", str(tmp_path / "keys"))
    assert code == 0, output
    key = next((tmp_path / "keys").glob("*.key"))
    (tmp_path / "signed").mkdir(exist_ok=True)
    copy = shutil.copytree(folder, tmp_path / "signed" / folder.name)
    shutil.copyfile(folder.with_name(folder.name + ".tar"), copy.with_name(copy.name + ".tar"))
    code, output = run_cli("sign", str(copy), "--key", str(key))
    assert code == 0 and key.stem in output, output
    return key, key.with_suffix(".pub")


def test_install_refuses_unsigned_and_foreign_signed_packages_before_touching_anything(device_export, tmp_path):
    folder, _ = device_export("generic-x86-64")
    key, public = _signed_copy(folder, tmp_path)
    code, output = _package(folder, "generic-x86-64", tmp_path / "x.tar", "--sign", str(key), "--wheel", str(key))
    assert code == 2 and "bundle is unsigned" in output  # a package key must also have signed the bundle
    signed = tmp_path / "signed" / folder.name
    code, output = _package(signed, "generic-x86-64", tmp_path / "signed.tar", "--sign", str(key))
    # the closing hint names the key install.sh checks, after sudo (which drops variables set before it)
    assert code == 0 and f"sudo TRUST_KEY=/path/to/{key.stem}.pub station/install.sh" in output, output
    code, output = _package(signed, "generic-x86-64", tmp_path / "unsigned.tar")
    assert code == 0 and "sudo ALLOW_UNSIGNED=yes station/install.sh" in output, output
    run_cli("keys", "new", "--out", str(tmp_path / "other"))
    other = next((tmp_path / "other").glob("*.pub"))
    prefix = tmp_path / "opt"
    for package, trusted, message in (("unsigned.tar", public, "the package is unsigned"),
                                      ("signed.tar", other, "does not verify with any trusted key")):
        box = _extract(tmp_path / package, tmp_path / f"box-{package}")
        assert (box / "trust" / f"{key.stem}.pub").is_file() == (package == "signed.tar")
        env = {**os.environ, "PREFIX": str(prefix), "CONFIG_DIR": str(tmp_path / "etc"), "SYSTEMD": "no",
               "TRUST_KEY": str(trusted)}
        run = subprocess.run(["bash", str(box / "install.sh")], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and message in run.stdout, run.stdout + run.stderr
    assert not prefix.exists()  # refused before anything was installed
    config = yaml.safe_load((tmp_path / "box-signed.tar" / "station.yaml").read_text())
    assert f"trust/{key.stem}.pub" in config["trust"]  # besides the keys the station config already trusted


def test_install_script_sets_up_a_station_that_answers_over_mqtt(device_export, boards, mqtt, tmp_path):
    from tests.harness.station import station_config, wait_until

    broker, new_probe = mqtt
    probe = new_probe()

    folder, _ = device_export("generic-x86-64")
    drop = tmp_path / "drop"
    drop.mkdir()
    camera = {"name": "label", "bundle": "replaced-by-package.tar", "mode": "folder",
              "watch": {"path": str(drop), "poll_s": 0.2, "settle_s": 0.3}}
    station = tmp_path / "my-station.yaml"
    station.write_text(yaml.safe_dump(station_config(broker.port, [camera])))
    key, public = _signed_copy(folder, tmp_path)
    assert _package(tmp_path / "signed" / folder.name, "generic-x86-64", tmp_path / "station.tar", "--station",
                    str(station), "--sign", str(key))[0] == 0
    box = _extract(tmp_path / "station.tar", tmp_path / "box")
    prefix, config_dir = tmp_path / "opt", tmp_path / "etc"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # a box has no source checkout on its path
           "PREFIX": str(prefix), "CONFIG_DIR": str(config_dir), "SYSTEMD": "no",
           "PYTHON": shutil.which("python3") or sys.executable, "TRUST_KEY": str(public)}
    began = time.monotonic()
    install = subprocess.run(["bash", str(box / "install.sh")], env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - began
    assert install.returncode == 0, install.stdout + install.stderr
    assert "is valid" in install.stdout and seconds < 120, (seconds, install.stdout)
    assert f"package signed by {key.stem}" in install.stdout and "signed by trusted key" in install.stdout
    print(f"install.sh took {seconds:.1f} s")
    assert (config_dir / "bundles" / f"{folder.name}.tar").is_file()

    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen([str(prefix / "venv" / "bin" / "edge-anomaly"), "serve", "--config",
                               str(config_dir / "station.yaml")], stdout=log, stderr=log, cwd=tmp_path)
    try:
        probe.wait_for("/status", lambda d: d["state"] == "online", timeout=30)
        status = new_probe().wait_for("/status")[0]  # a client that subscribes later gets it from the broker
        assert status.retain and status.data["state"] == "online"
        assert status.data["cameras"]["label"]["bundle"]["name"] == folder.name
        shutil.copyfile(list_images(boards / "test" / "good")[0], drop / "part.png")
        result = probe.wait_for("/label/result", timeout=30)[0].data
        assert result["source"] == "part.png" and result["label"] in ("normal", "anomalous")
        wait_until(lambda: (drop / "processed" / "part.png").is_file(), 10, "the file to be moved to processed/")
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0, (tmp_path / "daemon.log").read_text()
