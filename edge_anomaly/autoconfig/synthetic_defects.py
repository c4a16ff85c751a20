"""Defects made on normal images, so candidate models can be compared without real defect examples.

Each defect is local and small (a few feature cells across, as real scratches, spots and
contaminations are) and of a kind the product must catch: a foreign texture (smooth random
noise, the Perlin-noise patches of DRAEM), a piece of the part moved elsewhere (CutPaste, which
is also what a misplaced component looks like), a duplicated piece, a local blur, a colour or
brightness shift, and a small dark or bright spot. They are drawn on the image as the camera
gives it (after the region of interest), so every candidate input size sees the same defect.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("texture", "cutpaste", "duplicate", "blur", "colour", "spot")
# Defect diameter as a share of the image's shorter side: from a few feature cells at the
# default input size (8 px cells at 256 px) to a larger flaw.
DIAMETER_RANGE = (0.05, 0.14)


def _blob_mask(shape_hw: tuple[int, int], centre: tuple[int, int], diameter: float,
               rng: np.random.Generator) -> np.ndarray:
    """A soft-edged irregular blob (float32 0..1): an ellipse with a wobbly outline, feathered."""
    height, width = shape_hw
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = diameter / 2 * rng.uniform(0.6, 1.0, len(angles)) * np.array([1.0, rng.uniform(0.5, 1.0)])[
        np.arange(len(angles)) % 2]
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.float32)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
    feather = max(1, int(diameter * 0.08)) * 2 + 1
    return cv2.GaussianBlur(mask, (feather, feather), 0)


def _smooth_noise(shape_hw: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random RGB noise in 0..255: a coarse random grid upsampled (value noise, Perlin-like)."""
    coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    return cv2.resize(coarse, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def _random_centre(image: np.ndarray, diameter: float, rng: np.random.Generator, tries: int = 8) -> tuple[int, int]:
    """A random place on the part rather than on a flat background: of a few random centres, the one
    whose neighbourhood varies most (a blur or a moved piece on a plain area would change nothing)."""
    height, width = image.shape[:2]
    margin_x, margin_y = min(width // 2, int(diameter)), min(height // 2, int(diameter))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    size = max(3, int(diameter) | 1)
    detail = cv2.blur(gray * gray, (size, size)) - cv2.blur(gray, (size, size)) ** 2
    centres = [(int(rng.integers(margin_x, width - margin_x + 1)), int(rng.integers(margin_y, height - margin_y + 1)))
               for _ in range(tries)]
    return max(centres, key=lambda c: detail[min(c[1], height - 1), min(c[0], width - 1)])


def _patch_from_elsewhere(image: np.ndarray, box: int, rng: np.random.Generator) -> np.ndarray:
    """A ``box`` x ``box`` piece of the image from a random place, possibly flipped or rotated."""
    height, width = image.shape[:2]
    y, x = int(rng.integers(0, height - box + 1)), int(rng.integers(0, width - box + 1))
    piece = image[y:y + box, x:x + box].astype(np.float32)
    return np.rot90(piece, int(rng.integers(0, 4))).copy()


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of the RGB uint8 ``image`` with one synthetic defect of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic defect {kind!r}; choose from {', '.join(KINDS)}")
    height, width = image.shape[:2]
    diameter = float(rng.uniform(*DIAMETER_RANGE) * min(height, width))
    if kind == "spot":
        diameter *= 0.5
    diameter = max(diameter, 4.0)
    centre = _random_centre(image, diameter, rng)
    mask = _blob_mask((height, width), centre, diameter, rng)[..., None]
    base = image.astype(np.float32)
    if kind == "texture":
        painted = _smooth_noise((height, width), rng, int(rng.integers(4, 12)) * max(1, int(min(height, width)
                                                                                        / diameter)))
        strength = rng.uniform(0.5, 0.9)
        painted = base * (1 - strength) + painted * strength
    elif kind in ("cutpaste", "duplicate"):
        box = min(int(diameter * 1.5) + 1, height, width)
        painted = base.copy()
        x0, y0 = min(max(0, centre[0] - box // 2), width - box), min(max(0, centre[1] - box // 2), height - box)
        if kind == "cutpaste":
            piece = _patch_from_elsewhere(image, box, rng)
        else:  # the neighbouring piece repeated over this place: an extra or misplaced part
            dx = box if x0 + 2 * box <= width else -box if x0 - box >= 0 else 0
            piece = base[y0:y0 + box, x0 + dx:x0 + dx + box] if dx else _patch_from_elsewhere(image, box, rng)
        painted[y0:y0 + box, x0:x0 + box] = piece
        mask = _blob_mask((height, width), (x0 + box // 2, y0 + box // 2), box, rng)[..., None]
    elif kind == "blur":
        sigma = max(1.0, diameter / 8)
        painted = cv2.GaussianBlur(base, (0, 0), sigma)
    elif kind == "colour":
        shift = rng.uniform(-60, 60, 3).astype(np.float32)
        shift[int(rng.integers(0, 3))] = rng.choice([-1, 1]) * rng.uniform(50, 90)
        painted = base + shift
    else:  # spot
        level = 0.0 if rng.random() < 0.5 else 255.0
        painted = base * 0.2 + level * 0.8
    return (base * (1 - mask) + painted * mask).clip(0, 255).astype(np.uint8)


def synthetic_defect_set(images: list[np.ndarray], per_image: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """(defect images, their kinds): ``per_image`` defects on each normal image, the kinds in rotation."""
    rng = np.random.default_rng(seed)
    out, kinds = [], []
    for index, image in enumerate(images):
        for copy in range(per_image):
            kind = KINDS[(index * per_image + copy) % len(KINDS)]
            out.append(add_defect(image, kind, rng))
            kinds.append(kind)
    return out, kinds
