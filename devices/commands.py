"""``edge-anomaly devices`` and ``edge-anomaly package``, registered into the main command by edge_anomaly.cli."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _shapes(profile) -> str:
    export = profile.export
    return f"static, batch {export.batch}" if export.static else f"dynamic, batch 1-{export.max_batch}"


def run_devices(args: argparse.Namespace) -> None:
    from devices import list_profiles

    profiles = list_profiles()
    if args.json:
        print(json.dumps([{**p.model_dump(), "pip_command": p.install.pip_command} for p in profiles], indent=2))
        return
    header = ("profile", "board", "engine", "shapes", "batch", "threads", "input px", "install")
    rows = [header] + [(
        p.name, p.title,
        f"{p.export.format} {p.export.precision} on {p.runtime.backend} {p.runtime.device or ''}".strip(),
        _shapes(p), str(p.runtime.batch), str(p.runtime.threads or "auto"),
        f"{p.input.min_side}-{p.input.max_side} /{p.input.multiple_of}",
        p.install.pip_command + (f" (venv {' '.join(p.install.venv_flags)})" if p.install.venv_flags else ""),
    ) for p in profiles]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("\nexport: edge-anomaly export MODEL --device PROFILE; known limits: devices/PROFILE.yaml, devices/README.md")


def run_package(args: argparse.Namespace) -> None:
    from devices import load_profile
    from devices.package import build_package

    out = build_package(args.bundle, load_profile(args.device), args.out, args.station, args.wheel, args.sign,
                        args.requirements)
    print(f"station package for {args.device} written to {out}")
    print(install_hint(out.name, args.sign))


def install_hint(archive_name: str, sign: Path | None) -> str:
    """What to run on the box. install.sh refuses an unsigned package unless told, and checks a signed
    one against a key the box already trusts; sudo drops variables set before it, so they come after it."""
    unpack = f"on the box: mkdir station && tar -xf {archive_name} -C station && "
    if sign is None:
        return unpack + ("sudo ALLOW_UNSIGNED=yes station/install.sh\n"
                         "(an unsigned package: nothing proves who made it; package --sign KEY signs it)")
    public = Path(sign).with_suffix(".pub")
    return unpack + (f"sudo TRUST_KEY=/path/to/{public.name} station/install.sh\n"
                     f"(copy {public} to the box yourself: the key that checks the package must not come in it)")


def register(subparsers) -> None:
    """Add ``devices`` and ``package`` to ``subparsers``."""
    devices = subparsers.add_parser("devices", help="list the board profiles (engine, precision, shapes, install)")
    devices.add_argument("--json", action="store_true", help="every profile in full, as JSON")
    devices.set_defaults(run=run_devices)

    package = subparsers.add_parser(
        "package", help="one tar for a board: bundle, station config, systemd unit, install script, wheel",
        description="Verifies the bundle and that the board's engine can run it, points every camera of the station "
                    "config at it, and writes a tar whose install.sh sets the station up on the box.")
    package.add_argument("bundle", type=Path, help="bundle folder (its .tar twin is packaged) or .tar")
    package.add_argument("--device", required=True, metavar="PROFILE", help="device profile (edge-anomaly devices)")
    package.add_argument("--station", type=Path, help="station config (default: the example devices/station.yaml)")
    package.add_argument("--wheel", type=Path,
                         help="edge-anomaly wheel to ship (default: built from the source checkout; from an "
                              "installed copy, install.sh installs the same version from the package index)")
    package.add_argument("--sign", type=Path, metavar="KEY",
                         help="private key: signs SHA256SUMS (install.sh checks it first) and makes the station "
                              "trust the key; the bundle must be signed with it")
    package.add_argument("--requirements", type=Path, metavar="FILE",
                         help="pinned, hashed requirements for the board (pip-compile --generate-hashes): "
                              "install.sh installs them with --require-hashes")
    package.add_argument("--out", type=Path, required=True, help="the tar to write, e.g. station.tar")
    package.set_defaults(run=run_package)
