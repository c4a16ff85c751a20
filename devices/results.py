"""Measured figures per board: ``edge-anomaly bench BUNDLE --device PROFILE --record``.

Each profile has a Markdown table in ``devices/results/<profile>.md``. A row is appended only
from a bench run on real hardware; until the first one the table says that nobody measured it.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from devices import FOLDER, SOURCE_ROOT, DeviceProfile
from runtime import package_version
from runtime.backends.accelerators import accelerator
from runtime.cpu import local_cpu
from runtime.manifest import Manifest

COLUMNS = ("date (UTC)", "machine", "bundle", "engine", "backend / device", "mode", "batch", "threads", "frame",
           "latency median ms", "latency p95 ms", "throughput fps", "peak RSS MB", "d image / pixel AUROC",
           "edge-anomaly (bench)")
PLACEHOLDER = "| no measured rows yet |" + " |" * (len(COLUMNS) - 1)


def default_folder() -> Path:
    """``devices/results`` of the source checkout; an installed copy has no place of its own to write."""
    if SOURCE_ROOT is None:
        raise ValueError("--record outside a source checkout needs --results DIR "
                         "(copy the row into devices/results/ of the repository afterwards)")
    return FOLDER / "results"


def empty_table(profile: DeviceProfile) -> str:
    return (f"# {profile.name}: measured results\n\n"
            f"{profile.title}. Rows are appended by `edge-anomaly bench BUNDLE --device {profile.name} --record` "
            "on the board itself; only measured figures go in (devices/README.md).\n\n"
            f"| {' | '.join(COLUMNS)} |\n|{' --- |' * len(COLUMNS)}\n{PLACEHOLDER}\n")


def cpu_model() -> str:
    """CPU model (runtime.cpu.local_cpu) and the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{local_cpu().model}, {cores} cores"


def _delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def format_row(figures: dict, manifest: Manifest) -> str:
    """One table row from ``runtime.commands.bench``'s figures and the bundle's manifest (parity deltas)."""
    parity = manifest.parity
    machine = cpu_model()
    gpu = accelerator(figures["backend"], figures["device"])
    cells = [
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        f"{gpu} ({machine})" if gpu else machine,
        figures["bundle"],
        figures["engine"],
        f"{figures['backend']} / {figures['device'] or 'default'}",
        figures["mode"],
        figures["batch"],
        figures["threads"] or "engine default",
        figures["frame_size"],
        f"{figures['latency_ms_median']:.1f}",
        f"{figures['latency_ms_p95']:.1f}",
        f"{figures['throughput_fps']:.1f}",
        f"{figures['peak_rss_mb']:.0f}",
        f"{_delta(parity and parity.image_auroc_delta)} / {_delta(parity and parity.pixel_auroc_delta)}",
        package_version(),
    ]
    return "| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |"


def record(profile: DeviceProfile, row: str, folder: Path | None = None) -> Path:
    """Append ``row`` to the profile's table (made if missing); the first row replaces the placeholder."""
    path = (folder or default_folder()) / f"{profile.name}.md"
    text = path.read_text() if path.is_file() else empty_table(profile)
    lines = [line for line in text.rstrip("\n").splitlines() if line != PLACEHOLDER]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*lines, row]) + "\n")
    return path
