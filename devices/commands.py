"""``edge-anomaly devices``, ``package`` and ``bench``, registered into the main command through the entry points
of pyproject.toml (``edge_anomaly.commands``).

``bench`` is the runtime's measurement (runtime.commands) with a device profile's engine settings as defaults
and ``--record`` into its results table: the profile is this package's, and the runtime imports nothing above it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtime.commands import DEFAULT_FRAME_SIZE, add_engine_arguments, frame_size


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


def run_bench(args: argparse.Namespace) -> None:
    from runtime.commands import bench, print_figures

    engine = {"backend": args.backend or "auto", "device": args.engine_device, "threads": args.threads,
              "batch": args.batch or 1}
    target, profile = args.bundle, _device_profile(args.device, args.record)
    if profile is not None:  # the board's engine, device, threads and batch, unless given
        from runtime.bundle import open_bundle

        opened = open_bundle(args.bundle)
        target = opened.folder  # a .tar is unpacked once
        engine = profile.engine_settings(opened.engine.format, args.backend, args.threads, args.batch)
        engine["device"] = args.engine_device or engine["device"]
    figures = bench(target, **engine, frames=args.frames, warmup=args.warmup, frame_size=args.frame_size,
                    image=args.image, pipelined=args.pipelined)
    if args.record:
        from devices.results import format_row, record

        print(f"recorded in {record(profile, format_row(figures, opened.manifest), args.results)}")
    print_figures(figures, args.json)


def _device_profile(name: str | None, record: bool):
    """The device profile named by ``--device`` (None without one; ``--record`` needs one)."""
    from devices import load_profile, profile_names

    if name in profile_names():
        return load_profile(name)
    if record:
        raise ValueError("--record needs --device PROFILE (edge-anomaly devices lists them)")
    if name is None:
        return None
    raise ValueError(f"--device {name!r}: not a device profile (known: {', '.join(profile_names())}); "
                     f"an engine device goes to --engine-device, e.g. --engine-device {name}")


def register_bench(subparsers) -> None:
    """Add ``bench`` to ``subparsers``."""
    bench = subparsers.add_parser(
        "bench", help="latency, throughput and memory of a bundle on this machine (no torch needed)",
        description="Times Detector.predict end to end (decoded frame in, result out) on one frame repeated.")
    bench.add_argument("bundle", type=Path, help="bundle folder or .tar")
    bench.add_argument("--batch", type=int, help="frames per predict call (default: the profile's, else 1)")
    add_engine_arguments(bench, None, "default: the profile's, else auto", "the profile's, else the engine's choice")
    bench.add_argument("--device", metavar="PROFILE", help="device profile (edge-anomaly devices): its engine, "
                       "engine device, threads and batch become the defaults")
    bench.add_argument("--frames", type=int, default=50, help="timed calls (default 50)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    bench.add_argument("--frame-size", type=frame_size, default=frame_size(DEFAULT_FRAME_SIZE), metavar="WxH",
                       help=f"synthetic frame size (default {DEFAULT_FRAME_SIZE})")
    bench.add_argument("--image", help="time this image instead of a synthetic frame")
    bench.add_argument("--pipelined", action="store_true",
                       help="stream frames through the pipelined runner (throughput mode)")
    bench.add_argument("--json", action="store_true", help="print one JSON object (latency_ms_median, "
                       "latency_ms_p95, throughput_fps, peak_rss_mb, ...)")
    bench.add_argument("--record", action="store_true",
                       help="append the figures to the profile's results table (devices/results/PROFILE.md)")
    bench.add_argument("--results", type=Path, metavar="DIR",
                       help="folder of results tables for --record (default: devices/results of the checkout)")
    bench.set_defaults(run=run_bench)
