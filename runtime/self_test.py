"""The bundle checks itself on the box: a few normal images and the scores the exporting engine gave.

INT8 kernels differ between CPUs (x86 without VNNI saturates where VNNI does not; OpenVINO
and ONNX Runtime pick other kernels on AMX or Arm), so a bundle verified at export can
answer differently on the edge box. The exporter stores a handful of its normal calibration
images, at the model's input size, as PNG files in the bundle (hashed like every file), with
the raw scores its engine gave them, under the manifest's ``self_test``::

    {"images": [{"file": "selftest_0.png", "score": 12.3}, ...],
     "min_rank_corr": 0.9, "max_score_error": 0.1}

``max_score_error`` is in units of ``scoring.local.spread`` (the raw distance from the
threshold to a normalised score of 0.9). :func:`check_bundle` runs the images on the local
engine at every ``Detector.load`` and refuses the bundle (or, in ``warn`` mode, logs and
reports) when the scores leave those tolerances, naming both machines' CPU features.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.cpu import local_cpu
from runtime.image_io import ImageReadError, read_image, write_image
from runtime.manifest import BundleError, SelfTest, SelfTestImage

log = logging.getLogger(__name__)

MODES = ("refuse", "warn")
SELF_TEST_IMAGES = 8
MAX_IMAGE_BYTES = 4 << 20  # a 1024 px PNG is well under this; anything larger is not ours
# Tolerances per precision, measured on bottle: the same engine and CPU repeat its scores to
# float rounding (FP32 1e-6 of the spread, INT8 a few 1e-3 across thread counts), while an
# INT8 kernel that saturates moves them by whole spreads.
TOLERANCES = {"fp32": (0.99, 0.02), "fp16": (0.9, 0.1), "bf16": (0.9, 0.1), "int8": (0.9, 0.15)}


class SelfTestError(BundleError):
    """The bundle's engine answers differently on this machine than where it was exported."""


@dataclass
class SelfTestReport:
    passed: bool
    rank_corr: float
    max_score_error: float
    images: int
    local_cpu: dict
    export_cpu: dict | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's correlation (ranks of distinct floats; 1.0 when either side is constant)."""
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def write_images(folder: Path, images: np.ndarray) -> list[str]:
    """Write normal model inputs (uint8 RGB at the input size) as the bundle's self-test PNGs."""
    names = []
    for index, image in enumerate(images):
        names.append(f"selftest_{index}.png")
        write_image(Path(folder) / names[-1], image)
    return names


def section(files: list[str], scores: np.ndarray, precision: str) -> SelfTest:
    """The manifest's ``self_test`` for ``files`` scored ``scores`` by the exporting engine."""
    min_rank_corr, max_score_error = TOLERANCES[precision]
    return SelfTest(images=[SelfTestImage(file=name, score=float(score)) for name, score in zip(files, scores,
                                                                                                 strict=True)],
                    min_rank_corr=min_rank_corr, max_score_error=max_score_error)


def _read(folder: Path, name: str, size: tuple[int, int], where: str) -> np.ndarray:
    path = folder / name
    if Path(name).name != name or path.suffix.lower() != ".png":
        raise BundleError(f"{where}: self-test image {name!r} is not a PNG file name inside the bundle")
    if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
        raise BundleError(f"{path}: self-test image missing or larger than {MAX_IMAGE_BYTES} bytes")
    try:
        image = read_image(path)
    except ImageReadError as exc:
        raise BundleError(str(exc)) from None
    if image.shape[:2] != tuple(size):
        raise BundleError(f"{path}: self-test image is {image.shape[1]}x{image.shape[0]}, "
                          f"the model input is {size[1]}x{size[0]}")
    return image


def check_bundle(detector, mode: str = "refuse") -> SelfTestReport | None:
    """Run the bundle's self-test on ``detector``'s engine; None when the bundle carries none.

    ``refuse`` raises :class:`SelfTestError` on a failure; ``warn`` logs it and returns the report.
    """
    if mode not in MODES:
        raise ValueError(f"self_test {mode!r} is not one of {', '.join(MODES)}")
    manifest = detector.bundle.manifest
    test = manifest.self_test
    if test is None:
        return None
    where = f"{detector.bundle.source}/manifest.json self_test"
    stored = np.array([entry.score for entry in test.images])
    images = np.stack([_read(detector.bundle.folder, entry.file, detector.input_size, where) for entry in test.images])
    local = detector.infer(images)[1].astype(np.float64)
    corr = rank_corr(stored, local) if len(stored) > 2 else 1.0
    spread = manifest.scoring.local.spread
    error = float(np.abs(local - stored).max() / spread) if np.isfinite(local).all() else float("inf")
    here = local_cpu()
    there = manifest.parity.cpu if manifest.parity is not None else None
    exported = there.model_dump(mode="json") if there is not None else None
    min_rank_corr, max_error = test.min_rank_corr, test.max_score_error
    passed = corr >= min_rank_corr and error <= max_error
    message = (f"self-test {'passed' if passed else 'FAILED'} on {len(stored)} images: rank correlation {corr:.3f} "
               f"(min {min_rank_corr}), largest score error {error:.3f} spreads (max {max_error})")
    if passed:  # one short line at every load; the CPUs are in the report (the station's status carries it)
        log.info("bundle %s: %s", detector.bundle.name, message)
        return SelfTestReport(passed, corr, error, len(stored), here.model_dump(mode="json"), exported, message)
    message += f"; this CPU {here.describe()}, exported on {there.describe() if there else 'an unrecorded CPU'}"
    report = SelfTestReport(passed, corr, error, len(stored), here.model_dump(mode="json"), exported, message)
    hint = (f"; the engine computes differently on this CPU: export the bundle for it "
            f"(edge-anomaly export --target-isa {here.isa}) or in a higher precision")
    if mode == "refuse":
        raise SelfTestError(f"{detector.bundle.source}: {message}{hint}")
    log.warning("%s: %s%s", detector.bundle.source, message, hint)
    return report
