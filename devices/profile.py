"""The schema of a device profile (``devices/<name>.yaml``): one board, from export to install.

Validated strictly (unknown keys are errors) so that a typo in a profile names the field and
the file instead of silently falling back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from runtime.backends import BACKENDS, ENGINE_DEVICE_HELP, ENGINE_FORMATS, RUNS
from runtime.cpu import ISAS
from runtime.manifest import PRECISIONS
from runtime.schema import StrictModel, read_yaml, validate

Backend = Literal[BACKENDS]
Isa = Literal[ISAS]
Precision = Literal[PRECISIONS]


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


class ExportSettings(StrictModel):
    """Defaults for ``edge-anomaly export --device``; the keys match the command's flags."""

    format: Literal[ENGINE_FORMATS]
    precision: Precision
    isa: Isa | None = Field(None, description="the board CPU's instruction-set level, which picks the INT8 recipe "
                            "(exporters.recipes); none: the exporting CPU's. --target-isa overrides it")
    precision_by_isa: dict[Isa, Precision] = Field(
        default_factory=dict, description="the default precision where the target ISA (--target-isa) is one of these "
        "levels, e.g. {avx2: fp32} where INT8 brings no speed")
    batch: int = Field(1, ge=1, description="batch size when static")
    static: bool = Field(False, description="fixed batch and shapes (Intel NPU)")
    max_batch: int = Field(32, ge=1, description="largest batch of a dynamic engine")


class Fallback(StrictModel):
    backend: Backend
    device: str | None = None


class RuntimeSettings(StrictModel):
    """Defaults for ``Detector.load`` (and so for ``bench``, ``predict`` and the station's cameras)."""

    backend: Backend
    device: str | None = Field(None, description=ENGINE_DEVICE_HELP)
    threads: int | None = Field(None, ge=1, description="engine CPU threads; none: the engine's choice")
    batch: int = Field(1, ge=1, description="frames per inference call")
    fallback: Fallback | None = Field(None, description="the engine to use when the main one is missing")


class InputLimits(StrictModel):
    """Model input sizes (pixels per side) the board handles: memory, NPU tiling, speed."""

    min_side: int = Field(64, ge=32)
    max_side: int = Field(ge=32)
    multiple_of: int = Field(32, ge=1)
    max_pixels: int | None = Field(None, ge=32 * 32, description="largest height x width the board runs at line "
                                   "rate; automatic configuration (fit --device) keeps below it")

    def problem(self, size: tuple[int, int]) -> str | None:
        """Why a (height, width) input does not fit, or None."""
        for side in size:
            if side > self.max_side:
                return f"input side {side} px exceeds max_side {self.max_side}"
            if side < self.min_side:
                return f"input side {side} px is below min_side {self.min_side}"
            if side % self.multiple_of:
                return f"input side {side} px is not a multiple of {self.multiple_of}"
        if self.max_pixels is not None and size[0] * size[1] > self.max_pixels:
            return f"input {size[0]}x{size[1]} exceeds max_pixels {self.max_pixels}"
        return None


class Install(StrictModel):
    extra: Backend = Field(description="edge-anomaly extra holding the engine's Python package")
    venv_flags: list[str] = Field(default_factory=list, description="e.g. --system-site-packages (JetPack's TensorRT)")
    pip_options: list[str] = Field(default_factory=list, description="e.g. --extra-index-url for vendor wheels")
    groups: list[str] = Field(default_factory=lambda: ["video"], description="device groups for the service user")
    system: str | None = Field(None, description="what must be on the box before pip (OS image, drivers)")

    @property
    def extras(self) -> str:
        return f"{self.extra},daemon"

    @property
    def pip_command(self) -> str:
        options = "".join(f"{option} " for option in self.pip_options)
        return f'pip install {options}"edge-anomaly[{self.extras}]"'


class DeviceProfile(StrictModel):
    name: str
    title: str
    arch: Literal["x86_64", "aarch64"]
    export: ExportSettings
    runtime: RuntimeSettings
    input: InputLimits
    install: Install
    limits: list[str] = Field(description="known limits, in words")

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.export.format not in RUNS[self.runtime.backend]:
            raise ValueError(f"runtime.backend {self.runtime.backend!r} cannot run "
                             f"export.format {self.export.format!r}")
        if self.export.static and self.runtime.batch != self.export.batch:
            raise ValueError(f"runtime.batch {self.runtime.batch} differs from the static export.batch "
                             f"{self.export.batch}")
        return self

    def backend_for(self, engine_format: str) -> tuple[str, str | None]:
        """(backend, device) running an ``engine_format`` bundle on this board: the main engine, else the fallback."""
        for choice in (self.runtime, self.runtime.fallback):
            if choice is not None and engine_format in RUNS[choice.backend]:
                return choice.backend, choice.device
        usable = [c.backend for c in (self.runtime, self.runtime.fallback) if c is not None]
        raise ProfileError(f"profile {self.name!r} runs {' or '.join(usable)}, which cannot run a "
                           f"{engine_format} bundle (export it with --device {self.name})")

    def engine_settings(self, engine_format: str, backend: str | None = None, threads: int | None = None,
                        batch: int | None = None) -> dict:
        """``Detector.load``/bench settings for a bundle of ``engine_format`` on this board; given values win."""
        chosen, device = self.backend_for(engine_format)
        return {"backend": backend or chosen, "device": device if backend in (None, chosen) else None,
                "threads": threads or self.runtime.threads, "batch": batch or self.runtime.batch}


def read_profile(path: Path) -> DeviceProfile:
    """Load and validate one profile file; errors name the file and every bad field."""
    profile = validate(DeviceProfile, read_yaml(path, ProfileError), str(path), "device profile", ProfileError)
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name {profile.name!r} differs from the file name {path.stem!r}")
    return profile
