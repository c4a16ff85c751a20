"""The rules of the inspected region: the region of interest ``[x, y, width, height]`` in frame pixels, four
non-negative integers with a positive size, and the centre crop inside it, a fraction in (0, 1] of its shorter side.
The ``Roi`` and ``CenterCrop`` field types hold them for every file that names one (the model's params and the
bundle manifest's ``input``, the station's cameras for the ROI), so a bad value is refused where it is written, not
when it is used; ``check_roi`` and ``check_center_crop`` check a call's.

Kept apart from ``runtime.preprocess`` (cv2, numpy): the manifest's types load no numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral
from typing import Annotated

from pydantic import BeforeValidator

Region = tuple[int, int, int, int]  # x, y, width, height in frame pixels


def check_roi(roi: Iterable[int] | None, what: str = "roi") -> Region | None:
    """``roi`` as four non-negative integers with a positive size, or a ValueError naming it.

    Strict: a bool, a float (even ``1.0``) or a string is no pixel count, so ``[true, 0, 1, 1]`` is refused rather than
    read as ``[1, 0, 1, 1]``.
    """
    if roi is None:
        return None
    values = [] if isinstance(roi, (str, bytes, Mapping)) or not isinstance(roi, Iterable) else list(roi)
    if len(values) != 4 or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{what} must be four integers [x, y, width, height], got {roi!r}")
    x, y, w, h = (int(v) for v in values)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise ValueError(f"{what} {[x, y, w, h]} must be [x >= 0, y >= 0, width > 0, height > 0]")
    return x, y, w, h


# The ROI field of every file that takes one: check_roi's rule, on the value as written (before pydantic would turn
# true or 1.0 into 1).
Roi = Annotated[tuple[int, int, int, int], BeforeValidator(check_roi)]


def check_center_crop(fraction: float | None, what: str = "center_crop") -> float | None:
    """``fraction`` as a float in (0, 1], or a ValueError naming it (a bool is no fraction)."""
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"{what} must be a fraction in (0, 1] of the shorter side, got {fraction!r}")
    return float(fraction)


# The centre-crop field of every file that takes one: check_center_crop's rule, on the value as written.
CenterCrop = Annotated[float, BeforeValidator(check_center_crop)]
