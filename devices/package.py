"""``edge-anomaly package``: one tar with all a board needs to run a station.

The tar holds the verified bundle, the station config pointing at it, the systemd unit, the
board's profile, the edge-anomaly wheel and an ``install.sh`` written for the board, with
``SHA256SUMS`` over all of them, so a controls engineer copies one file to the box.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

from devices import FOLDER, SOURCE_ROOT, DeviceProfile
from runtime import package_version

EXAMPLE_STATION = FOLDER / "station.yaml"
log = logging.getLogger(__name__)


class PackageError(ValueError):
    """A bundle, config or wheel that must not go to a board; the message says which and why."""


def bundle_archive(bundle: Path) -> Path:
    """The bundle's ``.tar``: the path itself, or the twin that ``edge-anomaly export`` writes beside a folder."""
    if bundle.is_dir():
        twin = bundle.with_name(bundle.name + ".tar")
        if not twin.is_file():
            raise PackageError(f"{bundle}: no {twin.name} beside the bundle folder (export writes both)")
        return twin
    if not bundle.is_file():
        raise PackageError(f"{bundle}: no such bundle")
    return bundle


def check_bundle(archive: Path, profile: DeviceProfile) -> tuple[str, str | None]:
    """Verify the bundle's hashes and that the board can run it; returns the (backend, device) it will use."""
    from runtime.bundle import open_bundle

    bundle = open_bundle(archive)
    engine_format = bundle.engine.format
    backend, device = profile.backend_for(engine_format)
    if engine_format != profile.export.format:
        log.warning("profile %s exports %s bundles; this %s bundle will run on %s %s", profile.name,
                    profile.export.format, engine_format, backend, device or "")
    if profile.export.static and not bundle.engine.batch.static:
        raise PackageError(f"{archive}: profile {profile.name!r} needs static shapes, the bundle has a dynamic batch "
                           f"(export it with --device {profile.name})")
    problem = profile.input.problem(bundle.input_size)
    if problem:
        raise PackageError(f"{archive}: profile {profile.name!r} does not take this bundle ({problem})")
    return backend, device


def _trust_member(key) -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization

    from runtime.signing import key_id

    public = key.public_key()
    return {f"trust/{key_id(public)}.pub": public.public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo)}


def station_config(station: Path, bundle_name: str, profile: DeviceProfile, backend: str,
                   device: str | None, signing_key=None) -> str:
    """``station`` with every camera on the packaged bundle and, unless set, the board's engine settings;
    with a signing ``key``, the station trusts its public key (installed under trust/)."""
    from runtime.schema import read_yaml, validate
    from runtime.station.config import SECRET_FIELDS, StationConfig

    data = read_yaml(station, PackageError)
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise PackageError(f"{station}: not a station config (no 'cameras' list)")
    for camera in data["cameras"]:
        camera["bundle"] = f"bundles/{bundle_name}"  # relative: the daemon reads it from the config's folder
        for key, value in (("backend", backend), ("device", device), ("threads", profile.runtime.threads)):
            if value is not None:
                camera.setdefault(key, value)
    if signing_key is not None:
        trusted = next(iter(_trust_member(signing_key)))
        data["trust"] = [*data.get("trust", []), trusted] if trusted not in data.get("trust", []) else data["trust"]
    # the schema only (secrets are read on the box), with the station's own error report
    validate(StationConfig, data, str(station), "station config", PackageError, secret_fields=SECRET_FIELDS)
    header = (f"# Station config packaged for {profile.title} (profile {profile.name}) from {station.name}.\n"
              "# Relative paths are taken from this file's folder. Validate: edge-anomaly serve --config "
              "station.yaml --check\n")
    return header + yaml.safe_dump(data, sort_keys=False)


def service_unit(station: dict) -> str:
    """The systemd unit, allowed to write into the drop folders of folder-mode cameras."""
    unit = (FOLDER / "edge-anomaly.service").read_text()
    drops = [str(c["watch"]["path"]) for c in station["cameras"] if c.get("mode") == "folder"
             and Path(str(c["watch"]["path"])).is_absolute()]
    if drops:
        writable = "ReadWritePaths=/var/lib/edge-anomaly"
        unit = unit.replace(writable, f"{writable} {' '.join(drops)}")
    return unit


def build_wheel(out: Path) -> Path | None:
    """The edge-anomaly wheel built into ``out`` from the source checkout (None from an installed copy)."""
    if SOURCE_ROOT is None:
        return None
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                          str(SOURCE_ROOT)], capture_output=True, text=True, check=False)
    wheels = list(out.glob("edge_anomaly-*.whl"))
    if run.returncode != 0 or len(wheels) != 1:
        raise PackageError(f"building the edge-anomaly wheel from {SOURCE_ROOT} failed:\n{run.stderr[-2000:]}")
    return wheels[0]


def install_script(profile: DeviceProfile, requirement: str) -> str:
    install = profile.install
    values = {"TITLE": profile.title, "PROFILE": profile.name, "ARCH": profile.arch, "REQUIREMENT": requirement,
              "VENV_FLAGS": shlex.join(install.venv_flags), "PIP_OPTIONS": shlex.join(install.pip_options),
              "GROUPS": " ".join(install.groups)}
    script = (FOLDER / "install.sh.in").read_text()
    for key, value in values.items():
        script = script.replace(f"@{key}@", value)
    return script


def build_package(bundle: Path, profile: DeviceProfile, out: Path, station: Path | None = None,
                  wheel: Path | None = None, sign: Path | None = None, requirements: Path | None = None) -> Path:
    """Write the station tar ``out``; refuses a bundle that fails its hashes or that the board cannot run.

    ``sign``: a private key; the bundle must carry its signature, the package's SHA256SUMS is signed
    with it (``SHA256SUMS.sig``, which install.sh checks first) and the station trusts its public key.
    ``requirements``: pinned requirements with hashes (``pip-compile --generate-hashes``) for the board.
    """
    archive = bundle_archive(bundle)
    backend, device = check_bundle(archive, profile)
    key = _signing_key(sign, archive) if sign is not None else None
    station = station or EXAMPLE_STATION
    config = station_config(station, archive.name, profile, backend, device, key)
    if requirements is not None and "--hash=" not in requirements.read_text():
        raise PackageError(f"{requirements}: no --hash= lines; make it with pip-compile --generate-hashes")
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-wheel-") as scratch:
        wheel = wheel or build_wheel(Path(scratch))
        return _write(out, archive, profile, config, wheel, key, requirements)


def _signing_key(path: Path, archive: Path):
    """The private key, once the bundle is shown to carry its signature (the station will demand it)."""
    from runtime.bundle import BundleError, open_bundle
    from runtime.signing import TrustList, load_private_key

    key = load_private_key(path)
    try:
        open_bundle(archive, TrustList([key.public_key()]).verify)
    except BundleError as exc:
        raise PackageError(f"{exc} (sign it first: edge-anomaly sign {archive} --key {path})") from None
    return key


def _write(out: Path, archive: Path, profile: DeviceProfile, config: str, wheel: Path | None, key=None,
           requirements: Path | None = None) -> Path:
    if wheel is not None and not wheel.name.startswith("edge_anomaly-"):
        raise PackageError(f"{wheel}: not an edge-anomaly wheel")
    extras = profile.install.extras
    requirement = f"./wheels/{wheel.name}[{extras}]" if wheel else f"edge-anomaly[{extras}]=={package_version()}"
    members: dict[str, bytes] = {
        f"bundles/{archive.name}": archive.read_bytes(),
        "station.yaml": config.encode(),
        "edge-anomaly.service": service_unit(yaml.safe_load(config)).encode(),
        "profile.yaml": (FOLDER / f"{profile.name}.yaml").read_bytes(),
        "install.sh": install_script(profile, requirement).encode(),
    }
    if wheel is not None:
        members[f"wheels/{wheel.name}"] = wheel.read_bytes()
    if requirements is not None:
        members["requirements.txt"] = requirements.read_bytes()
    if key is not None:
        members.update(_trust_member(key))
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items())
    members["SHA256SUMS"] = sums.encode()
    if key is not None:
        from runtime.signing import sign_file

        members["SHA256SUMS.sig"] = sign_file(members["SHA256SUMS"], key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            info.mode = 0o755 if name == "install.sh" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out
