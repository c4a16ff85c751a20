"""The region of interest's one rule: ``[x, y, width, height]`` in frame pixels, four non-negative integers with a
positive size. The ``Roi`` field type holds it for every file that names one (the model's params, the station's
cameras, the bundle manifest's ``input.roi``), so a bad ROI is refused where it is written, not when it is used.

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
