"""How good parts fare under a real camera's ordinary variation, and defects under its noise.

Each variation of :data:`VARIATIONS` is applied to every good test image at the camera's
resolution (before the crop and resize to the model input) and the model's verdicts are
counted: how many good parts it would flag, and what kind it would call them. A line lives
with these figures: sensor noise, a JPEG stream or a darker lamp must not stop it, and a
capture fault must be named as one (``noise``, ``compression``, ``lighting``, ``blur``), never
as a defect of the part (``local``). The defects are also scored under sensor noise, to show
that tolerating noise did not cost misses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_anomaly.data import capture
from edge_anomaly.data.folders import TestSample
from edge_anomaly.model import TrainedModel
from runtime.image_io import ImageReadError, read_image

Variation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class CaptureVariation:
    name: str
    apply: Variation


def _noise(sigma: float) -> CaptureVariation:
    return CaptureVariation(f"noise sigma {sigma:g}", lambda rgb, rng: capture.sensor_noise(rgb, sigma, rng))


def _jpeg(quality: int) -> CaptureVariation:
    return CaptureVariation(f"JPEG quality {quality}", lambda rgb, rng: capture.jpeg(rgb, quality))


def _exposure(gain: float) -> CaptureVariation:
    return CaptureVariation(f"exposure x{gain:g}", lambda rgb, rng: capture.exposure(rgb, gain))


def _shift(pixels: int) -> CaptureVariation:
    return CaptureVariation(f"shift {pixels} px", lambda rgb, rng: capture.move(rgb, pixels, pixels))


VARIATIONS: tuple[CaptureVariation, ...] = (
    CaptureVariation("none", lambda rgb, rng: rgb),
    _noise(2), _noise(3), _noise(5),
    _jpeg(85), _jpeg(75), _jpeg(60),
    _exposure(0.85), _exposure(0.9), _exposure(1.1), _exposure(1.15),
    _shift(2), _shift(4),
    CaptureVariation("rotation 2 deg", lambda rgb, rng: capture.move(rgb, degrees=2.0)),
    CaptureVariation("blur sigma 1", lambda rgb, rng: capture.defocus(rgb, 1.0)),
    CaptureVariation("blur sigma 1.5", lambda rgb, rng: capture.defocus(rgb, 1.5)),
)
DEFECT_NOISE_SIGMA = 2.0


def _verdicts(model: TrainedModel, frames: Sequence[np.ndarray], variation: Variation,
              seed: int) -> list[tuple[bool, str | None]]:
    rng = np.random.default_rng(seed)
    out = []
    batch = model.params.batch_size
    for start in range(0, len(frames), batch):
        varied = [variation(frame, rng) for frame in frames[start:start + batch]]
        out.extend((r.is_anomalous, r.kind) for r in model.predict(varied))
    return out


def capture_table(model: TrainedModel, samples: Sequence[TestSample], seed: int = 0,
                  variations: Sequence[CaptureVariation] = VARIATIONS,
                  advance: Callable[[], None] | None = None) -> dict:
    """``{"good": [row per variation], "defects": {clean and noisy misses}}`` for an MVTec-layout test set.

    A good row: ``{"variation", "n", "flagged", "kinds": {kind: count}}``; the defects entry gives
    the misses at the calibrated threshold on the clean defect images and with sensor noise of
    DEFECT_NOISE_SIGMA grey levels added.
    """
    good, defects = [], []
    for sample in samples:
        try:
            (good if sample.label == 0 else defects).append(read_image(sample.path))
        except ImageReadError:
            continue  # evaluate already reported it
    rows = []
    for index, variation in enumerate(variations):
        verdicts = _verdicts(model, good, variation.apply, seed + index)
        rows.append({"variation": variation.name, "n": len(good), "flagged": sum(flag for flag, _ in verdicts),
                     "kinds": dict(Counter(kind for flag, kind in verdicts if flag))})
        if advance is not None:
            advance()
    noisy = _noise(DEFECT_NOISE_SIGMA)
    clean_misses = sum(not flag for flag, _ in _verdicts(model, defects, lambda rgb, rng: rgb, seed))
    noisy_misses = sum(not flag for flag, _ in _verdicts(model, defects, noisy.apply, seed))
    return {"good": rows, "defects": {"n": len(defects), "misses_clean": clean_misses,
                                      f"misses_{noisy.name.replace(' ', '_')}": noisy_misses,
                                      "noise_sigma": DEFECT_NOISE_SIGMA}}


def capture_markdown(table: dict) -> str:
    """The table as Markdown: good parts flagged per variation, then the defects' misses."""
    lines = ["| capture variation on good parts | flagged | kinds given |", "| --- | ---: | --- |"]
    for row in table["good"]:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(row["kinds"].items()))
        lines.append(f"| {row['variation']} | {row['flagged']} of {row['n']} | {kinds} |")
    d = table["defects"]
    noisy = next(value for key, value in d.items() if key.startswith("misses_noise"))
    lines += ["", f"Defects missed at the calibrated threshold: {d['misses_clean']} of {d['n']} clean, "
              f"{noisy} of {d['n']} with sensor noise sigma {d['noise_sigma']:g}."]
    return "\n".join(lines)
