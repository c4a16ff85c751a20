"""The name of the GPU or NPU an engine ran on, for the boards' results tables (devices/results.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def accelerator(backend: str, device: str | None) -> str | None:
    """The GPU or NPU's name when the bench ran on one."""
    device = (device or "CPU").upper()
    if backend == "tensorrt" or device.startswith("CUDA"):
        board = Path("/proc/device-tree/model")  # Jetson: the module's name
        if board.is_file():
            return board.read_text().strip("\x00\n ")
        if shutil.which("nvidia-smi"):
            query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, check=False)
            return query.stdout.splitlines()[0].strip() if query.returncode == 0 and query.stdout else "NVIDIA GPU"
        return "NVIDIA GPU"
    if backend == "openvino" and device != "CPU":
        import openvino as ov

        return str(ov.Core().get_property(device, "FULL_DEVICE_NAME"))
    return None
