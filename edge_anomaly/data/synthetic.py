"""Synthetic printed-circuit-board dataset for anomaly detection, in the MVTec AD layout.

Why it exists: ``edge-anomaly demo`` and the tests need a realistic dataset on a fresh machine,
without downloads. Like a production line, every good image shows the *same* board design; good
images differ only by what a real camera sees (board pose, per-component placement, exposure,
colour temperature, sensor noise, conveyor texture). Each defect folder holds one kind of anomaly
drawn on top of a freshly generated good board, with its pixel mask drawn from the same geometry.

The module has three parts:

* design: the fixed board layout (parts, pads, traces, silkscreen), independent of the seed;
* render: one camera shot of a board (pose, placement jitter, conveyor, exposure, noise);
* defects: one small function per defect kind.

All lengths of the design are in *design units*: pixels of a 320x256 frame. Other frame sizes
scale everything by the same factor, so defects keep their size relative to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

DEFECT_KINDS: dict[str, str] = {
    "missing_component": "local",
    "shifted_component": "local",
    "scratch": "local",
    "solder_blob": "local",
    "foreign_object": "local",
    "too_dark": "lighting",
    "too_bright": "lighting",
    "shadow": "lighting",
    "blur": "blur",
}
"""Defect folder name -> kind. Only "local" kinds have ground-truth masks."""

LOGICAL_DEFECT_KINDS: dict[str, str] = {
    "swapped_parts": "logical",
    "wrong_part_type": "logical",
    "one_too_many": "logical",
    "one_too_few": "logical",
    "mirrored_part": "logical",
}
"""Opt-in (``generate_boards(..., logical=True)``) defects where every part is locally perfect
and only its place, count or orientation is wrong. They have ground-truth masks."""

_REF_SIZE = (320, 256)  # frame (width, height) whose pixels are the design units
_BOARD_SIZE = (240.0, 176.0)  # board (width, height); the 40-unit margins show the conveyor
_DESIGN_SEED = 7  # fixed: every good board is the same design, whatever the dataset seed
_MIN_DEFECT_PART_AREA = 250.0  # parts smaller than ~0.3% of the frame are too small to remove/shift

Colour = tuple[int, int, int]  # BGR, as cv2 draws and writes
Poly = np.ndarray  # (N, 2) float points
Pose = tuple[float, float, float]  # x, y (design units), angle (degrees)

_SOLDER_MASK: Colour = (38, 96, 24)
_TRACE: Colour = (58, 146, 108)  # copper seen through the green solder mask
_GOLD: Colour = (80, 168, 212)
_HOLE: Colour = (42, 42, 44)
_SILK: Colour = (222, 228, 228)
_BLACK_BODY: Colour = (32, 31, 30)
_RESISTOR_BODY: Colour = (40, 38, 36)
_CAPACITOR_BODY: Colour = (80, 124, 165)
_METAL: Colour = (188, 190, 194)
_CONVEYOR: Colour = (122, 124, 126)


# ----------------------------------------------------------------------------------------- design


def _rect(w: float, h: float, x: float = 0.0, y: float = 0.0) -> Poly:
    return np.array(
        [[x - w / 2, y - h / 2], [x + w / 2, y - h / 2], [x + w / 2, y + h / 2], [x - w / 2, y + h / 2]]
    )


def _ellipse(rx: float, ry: float, x: float = 0.0, y: float = 0.0, n: int = 32) -> Poly:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([x + rx * np.cos(t), y + ry * np.sin(t)], axis=1)


def _stadium(w: float, h: float) -> Poly:
    """A rectangle with semicircular ends: the outline of an HC-49 crystal can."""
    t = np.linspace(-np.pi / 2, np.pi / 2, 12)
    r, c = h / 2, w / 2 - h / 2
    right = np.stack([c + r * np.cos(t), r * np.sin(t)], axis=1)
    return np.concatenate([right, -right])


def _pose(poly: Poly, x: float, y: float, angle_deg: float) -> Poly:
    """Rotate a local-frame polygon by angle_deg and move its origin to (x, y)."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return poly @ rot.T + (x, y)


@dataclass(frozen=True)
class _Part:
    """One component of the design. Sizes in design units, angle in degrees."""

    name: str  # reference designator, printed on the silkscreen
    kind: str  # "resistor", "capacitor", "soic", "qfp", "electrolytic", "crystal" or "header"
    x: float
    y: float
    w: float
    h: float
    angle: float = 0.0
    pins: int = 0  # per long side for "soic", per side for "qfp", in total for "header"
    label: str = "above"  # where the silkscreen designator goes: "above", "left" or "right"


class _Footprint(NamedTuple):
    """A part's geometry in its local frame: pads and holes stay on the board, the body is the part."""

    pads: list[Poly]
    holes: list[Poly]
    body: list[tuple[Poly, Colour]]  # drawn in order


def _chip(p: _Part) -> _Footprint:
    """SMD resistor or capacitor: a small body with metal end caps, on two pads."""
    body = _RESISTOR_BODY if p.kind == "resistor" else _CAPACITOR_BODY
    ends = [_rect(4.0, p.h + 2, sx * (p.w / 2 - 1)) for sx in (-1, 1)]
    return _Footprint(ends, [], [(_rect(p.w, p.h), _METAL), (_rect(p.w - 4.4, p.h), body)])


def _ic_marks(p: _Part) -> list[tuple[Poly, Colour]]:
    """Black package, pale pin-1 dot and a faint printed marking."""
    return [
        (_rect(p.w, p.h), _BLACK_BODY),
        (_ellipse(1.4, 1.4, -p.w / 2 + 3, p.h / 2 - 3, 12), (160, 160, 158)),
        (_rect(p.w * 0.5, 1.0, 0, -1.2), (82, 82, 80)),
        (_rect(p.w * 0.3, 1.0, -p.w * 0.1, 1.2), (82, 82, 80)),
    ]


def _soic(p: _Part) -> _Footprint:
    pitch = p.w / p.pins
    xs = [-p.w / 2 + pitch * (i + 0.5) for i in range(p.pins)]
    legs = [(_rect(pitch * 0.5, 4.0, x, sy * (p.h / 2 + 1.5)), _METAL) for x in xs for sy in (-1, 1)]
    pads = [_rect(pitch * 0.62, 5.0, x, sy * (p.h / 2 + 2.4)) for x in xs for sy in (-1, 1)]
    return _Footprint(pads, [], legs + _ic_marks(p))


def _qfp(p: _Part) -> _Footprint:
    pitch = p.w / p.pins
    xs = [-p.w / 2 + pitch * (i + 0.5) for i in range(p.pins)]
    sides = (0, 90, 180, 270)
    legs = [(_pose(_rect(pitch * 0.5, 4.0, x, -p.h / 2 - 1.5), 0, 0, a), _METAL) for a in sides for x in xs]
    pads = [_pose(_rect(pitch * 0.62, 5.0, x, -p.h / 2 - 2.4), 0, 0, a) for a in sides for x in xs]
    return _Footprint(pads, [], legs + _ic_marks(p))


def _electrolytic(p: _Part) -> _Footprint:
    d = p.w
    t = np.deg2rad(np.linspace(140, 220, 10))
    stripe = np.concatenate([[[0.0, 0.0]], np.stack([d / 2 * np.cos(t), d / 2 * np.sin(t)], axis=1)])
    vents = [(_pose(_rect(d * 0.3, 0.8, d * 0.15, 0), 0, 0, a), (118, 120, 124)) for a in (-90, 30, 150)]
    body = [
        (_ellipse(d / 2, d / 2), (40, 38, 36)),
        (stripe, (170, 170, 168)),
        (_ellipse(d * 0.4, d * 0.4), (182, 186, 190)),
        *vents,
    ]
    leads = [sx * d * 0.22 for sx in (-1, 1)]
    return _Footprint(
        [_ellipse(d * 0.12, d * 0.12, x) for x in leads],
        [_ellipse(d * 0.05, d * 0.05, x) for x in leads],
        body,
    )


def _crystal(p: _Part) -> _Footprint:
    leads = [sx * p.w * 0.28 for sx in (-1, 1)]
    body = [(_stadium(p.w, p.h), (150, 152, 156)), (_stadium(p.w - 2.4, p.h - 2.4), (200, 202, 206))]
    return _Footprint([_ellipse(2.6, 2.6, x) for x in leads], [_ellipse(1.1, 1.1, x) for x in leads], body)


def _header(p: _Part) -> _Footprint:
    pitch = p.w / p.pins
    xs = [-p.w / 2 + pitch * (i + 0.5) for i in range(p.pins)]
    pins = [(_rect(2.8, 2.8, x), _GOLD) for x in xs] + [(_rect(1.2, 1.2, x), (50, 110, 150)) for x in xs]
    return _Footprint(
        [_ellipse(2.8, 2.8, x) for x in xs],
        [_ellipse(1.2, 1.2, x) for x in xs],
        [(_rect(p.w, p.h), (36, 36, 36)), *pins],
    )


_FOOTPRINTS = {
    "resistor": _chip,
    "capacitor": _chip,
    "soic": _soic,
    "qfp": _qfp,
    "electrolytic": _electrolytic,
    "crystal": _crystal,
    "header": _header,
}


_PARTS: tuple[_Part, ...] = (
    _Part("U1", "qfp", 62, 70, 36, 36, pins=9),
    _Part("U2", "soic", 160, 38, 34, 16, pins=7, label="right"),
    _Part("U3", "soic", 200, 100, 22, 14, angle=90, pins=4),
    _Part("Y1", "crystal", 104, 72, 26, 11, angle=90),
    _Part("C1", "electrolytic", 140, 128, 28, 28),
    _Part("C2", "electrolytic", 212, 148, 22, 22),
    _Part("J1", "header", 62, 152, 48, 8, pins=6),
    _Part("R1", "resistor", 124, 30, 10, 5),
    _Part("R2", "resistor", 124, 44, 10, 5, label="left"),
    _Part("R3", "resistor", 100, 112, 10, 5),
    _Part("R4", "resistor", 100, 124, 10, 5, label="left"),
    _Part("R5", "resistor", 178, 150, 10, 5, angle=90),
    _Part("R6", "resistor", 228, 100, 10, 5, angle=90),
    _Part("C3", "capacitor", 18, 62, 10, 5, angle=90),
    _Part("C4", "capacitor", 18, 84, 10, 5, angle=90),
    _Part("C5", "capacitor", 186, 66, 10, 5),
    _Part("C6", "capacitor", 224, 60, 10, 5, angle=90),
    _Part("C7", "capacitor", 62, 114, 10, 5),
)


@dataclass(frozen=True)
class _Design:
    """The fixed board layout every good image shows."""

    parts: tuple[_Part, ...]
    footprints: dict[str, _Footprint]  # part name -> local geometry
    pads: list[tuple[str, Poly]]  # (owning part, pad outline) on the board
    traces: list[Poly]  # polylines
    vias: list[tuple[float, float]]

    def hull(self, name: str, pose: Pose) -> Poly:
        """Outline of a part's body (the area it covers) at the given pose."""
        pts = np.concatenate([poly for poly, _ in self.footprints[name].body])
        return _pose(cv2.convexHull(pts.astype(np.float32))[:, 0].astype(float), *pose)


def _route(a: np.ndarray, b: np.ndarray) -> Poly:
    """A PCB-style trace from a to b: straight along the longer axis, then a 45-degree run."""
    d = b - a
    k = min(abs(d[0]), abs(d[1]))
    corner = b - np.sign(d) * k
    return np.array([a, corner, b])


def _design() -> _Design:
    """Lay out the board: parts from _PARTS, traces and vias from a fixed seed."""
    rng = np.random.default_rng(_DESIGN_SEED)
    footprints = {p.name: _FOOTPRINTS[p.kind](p) for p in _PARTS}
    pads = [(p.name, _pose(pad, p.x, p.y, p.angle)) for p in _PARTS for pad in footprints[p.name].pads]
    centres = np.array([pad.mean(axis=0) for _, pad in pads])
    bw, bh = _BOARD_SIZE
    traces, vias = [], []
    for i in rng.permutation(len(pads))[:64]:
        a = centres[i]
        others = [j for j, (owner, _) in enumerate(pads) if owner != pads[i][0]]
        dist = np.linalg.norm(centres[others] - a, axis=1)
        near = [others[j] for j in np.flatnonzero((dist > 15) & (dist < 70))]
        if near and rng.random() < 0.6:
            b = centres[rng.choice(near)]
        else:  # run off to a via
            b = np.clip(a + rng.uniform(-30, 30, 2), 12, (bw - 12, bh - 12))
            vias.append((float(b[0]), float(b[1])))
        traces.append(_route(a, b))
    return _Design(_PARTS, footprints, pads, traces, vias)


# ----------------------------------------------------------------------------------------- render


def _fill(img: np.ndarray, poly: Poly, colour: Colour | int, scale: float, aa: bool = True) -> None:
    """Fill a design-unit polygon with sub-pixel accuracy (cv2 fixed point, 4 fractional bits)."""
    pts = np.round(poly * scale * 16).astype(np.int32)
    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA if aa else cv2.LINE_8, shift=4)


def _line(
    img: np.ndarray,
    poly: Poly,
    colour: Colour | int,
    width: float,
    scale: float,
    aa: bool = True,
    closed: bool = False,
) -> None:
    """Draw a design-unit polyline, width in design units (at least one pixel)."""
    pts = np.round(poly * scale * 16).astype(np.int32)
    thickness = max(1, round(width * scale))
    cv2.polylines(img, [pts], closed, colour, thickness, cv2.LINE_AA if aa else cv2.LINE_8, shift=4)


@dataclass(frozen=True)
class _BoardArt:
    """What all shots of one dataset share: the design and its printed board (without parts)."""

    design: _Design
    size: tuple[int, int]  # frame (width, height)
    scale: float  # pixels per design unit
    layer: np.ndarray  # bare board (uint8 BGR): solder mask, traces, pads, holes, silkscreen
    alpha: np.ndarray  # board outline coverage (float32, 0..1), same shape
    belt: np.ndarray  # conveyor grain (float32), twice the frame in each direction

    @classmethod
    def build(cls, size: tuple[int, int]) -> _BoardArt:
        w, h = size
        scale = min(w / _REF_SIZE[0], h / _REF_SIZE[1])
        design = _design()
        bw, bh = _BOARD_SIZE
        shape = (int(np.ceil(bh * scale)), int(np.ceil(bw * scale)))
        layer = np.empty((*shape, 3), np.uint8)
        layer[:] = _SOLDER_MASK
        for trace in design.traces:
            _line(layer, trace, _TRACE, 1.5, scale)
        for _, pad in design.pads:
            _fill(layer, pad, _GOLD, scale)
        for x, y in design.vias:
            _fill(layer, _ellipse(2.0, 2.0, x, y, 16), _GOLD, scale)
            _fill(layer, _ellipse(0.9, 0.9, x, y, 12), _HOLE, scale)
        for p in design.parts:
            for hole in design.footprints[p.name].holes:
                _fill(layer, _pose(hole, p.x, p.y, p.angle), _HOLE, scale)
        _silkscreen(layer, design, scale)
        for x in (7, bw - 7):  # mounting holes
            for y in (7, bh - 7):
                _fill(layer, _ellipse(4.6, 4.6, x, y), _GOLD, scale)
                _fill(layer, _ellipse(3.2, 3.2, x, y), _HOLE, scale)
        outline = _rounded_rect(bw, bh, 5.0)
        _line(layer, outline, (30, 70, 20), 1.0, scale, closed=True)  # darker board edge
        alpha = np.zeros(shape, np.uint8)
        _fill(alpha, outline, 255, scale)
        grain = np.random.default_rng(_DESIGN_SEED).standard_normal((2 * h, 2 * w), np.float32)
        belt = 5 * cv2.GaussianBlur(grain, (0, 0), 0.8 * scale)
        return cls(design, (w, h), scale, layer, alpha.astype(np.float32) / 255, belt)


def _rounded_rect(w: float, h: float, r: float) -> Poly:
    t = np.linspace(0, np.pi / 2, 6)
    arc = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    corners = [(w - r, h - r), (r, h - r), (r, r), (w - r, r)]
    return np.concatenate([_pose(arc, cx, cy, 90 * k) for k, (cx, cy) in enumerate(corners)])


def _silkscreen(layer: np.ndarray, design: _Design, scale: float) -> None:
    """White outlines and reference designators, plus the board's name."""
    font, font_scale = cv2.FONT_HERSHEY_PLAIN, 0.55 * scale
    for p in design.parts:
        hull = design.hull(p.name, (p.x, p.y, p.angle))
        lo, hi = hull.min(axis=0) - 2.0, hull.max(axis=0) + 2.0
        if p.kind in ("resistor", "capacitor", "crystal", "header"):
            box = np.array([lo, (hi[0], lo[1]), hi, (lo[0], hi[1])])
            _line(layer, box, _SILK, 0.7, scale, closed=True)
        elif p.kind == "electrolytic":
            r = p.w / 2 + 1.5
            _line(layer, _ellipse(r, r, p.x, p.y, 40), _SILK, 0.7, scale, closed=True)
        (tw, th), _ = cv2.getTextSize(p.name, font, font_scale, 1)
        tw, th = tw / scale, th / scale
        origin = {
            "above": (lo[0], lo[1] - 1.5),
            "left": (lo[0] - tw - 1.5, p.y + th / 2),
            "right": (hi[0] + 1.5, p.y + th / 2),
        }[p.label]
        org = (int(round(origin[0] * scale)), int(round(origin[1] * scale)))
        cv2.putText(layer, p.name, org, font, font_scale, _SILK, 1, cv2.LINE_AA)
    name_org = (int(round(100 * scale)), int(round(168 * scale)))
    cv2.putText(layer, "EA-7 REV.B", name_org, font, font_scale, _SILK, 1, cv2.LINE_AA)


def _draw_part(img: np.ndarray, design: _Design, name: str, pose: Pose, scale: float,
               looks: tuple[str, bool] | None = None) -> None:
    """Draw a part's body; ``looks`` = (the part whose body is drawn instead, mirrored or not)."""
    shown, mirrored = looks or (name, False)
    for poly, colour in design.footprints[shown].body:
        _fill(img, _pose(poly * (-1.0 if mirrored else 1.0, 1.0), *pose), colour, scale)


def _conveyor(rng: np.random.Generator, art: _BoardArt) -> np.ndarray:
    """The grey belt under the board (float32 BGR): its grain where the belt has moved to, and shading."""
    w, h = art.size
    x, y = rng.integers(0, w), rng.integers(0, h)
    shading = cv2.resize(rng.normal(0, 4, (6, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grey = shading + art.belt[y : y + h, x : x + w] + np.float32(rng.uniform(-4, 4))
    return cv2.merge([grey + np.float32(c) for c in _CONVEYOR])


def _board_pose(rng: np.random.Generator, art: _BoardArt) -> np.ndarray:
    """Affine map board pixels -> frame pixels: the board centred, shifted a few px, rotated <= 1 deg."""
    a = np.deg2rad(rng.uniform(-1.0, 1.0))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    board_centre = np.array(art.layer.shape[1::-1], float) / 2
    frame_centre = np.array(art.size, float) / 2 + rng.uniform(-3, 3, 2) * art.scale
    return np.hstack([rot, (frame_centre - rot @ board_centre)[:, None]])


def _compose(
    art: _BoardArt, board: np.ndarray, pose: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lay the board on the conveyor (with a faint drop shadow); return the scene and board coverage."""
    size = art.size
    alpha = cv2.warpAffine(art.alpha, pose, size, flags=cv2.INTER_LINEAR)
    offset = pose.copy()
    offset[:, 2] += np.array([1.5, 2.5]) * art.scale
    drop = cv2.GaussianBlur(cv2.warpAffine(art.alpha, offset, size), (0, 0), 2.5 * art.scale)
    board_px = cv2.warpAffine(board, pose, size, flags=cv2.INTER_LINEAR).astype(np.float32)
    shaded = background * cv2.merge([1 - 0.35 * drop] * 3)
    a = cv2.merge([alpha] * 3)
    scene = shaded + a * (board_px - shaded)
    return cv2.convertScaleAbs(scene), alpha


def _camera(rng: np.random.Generator, scene: np.ndarray, defect: str | None, scale: float) -> np.ndarray:
    """Expose the scene: lighting, optics, gain, colour temperature and sensor noise -> uint8 BGR."""
    img = scene.astype(np.float32)
    if defect == "shadow":
        img *= _shadow_map(rng, scene.shape[1::-1], scale)[..., None]
    if defect == "blur":
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(2.5, 4.0) * scale)
    gain = {"too_dark": (0.35, 0.55), "too_bright": (1.6, 2.2)}.get(defect or "", (0.92, 1.08))
    warmth = rng.uniform(-0.03, 0.03)
    img *= rng.uniform(*gain) * np.array([1 - warmth, 1, 1 + warmth], np.float32)
    img += np.float32(rng.uniform(2.0, 3.0)) * rng.standard_normal(img.shape, np.float32)
    return cv2.convertScaleAbs(np.maximum(img, 0, out=img))  # rounds and saturates at 255


def _render(
    art: _BoardArt, rng: np.random.Generator, defect: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One camera shot of a board, with the given defect (None: a good board) and its mask."""
    design, scale = art.design, art.scale
    poses = {
        p.name: (p.x + rng.uniform(-1.5, 1.5), p.y + rng.uniform(-1.5, 1.5), p.angle + rng.uniform(-1, 1))
        for p in design.parts
    }
    board = art.layer.copy()
    board_mask = np.zeros(board.shape[:2], np.uint8)
    looks: dict[str, tuple[str, bool]] = {}
    if defect == "missing_component":
        _missing_component(rng, design, poses, board_mask, scale)
    elif defect == "shifted_component":
        _shifted_component(rng, design, poses, board_mask, scale)
    elif defect in LOGICAL_DEFECT_KINDS:  # a child stream: the rest of the shot is as without the defect
        looks = _LOGICAL[defect](rng.spawn(1)[0], art, poses, board, board_mask)
    for name, pose in poses.items():
        _draw_part(board, design, name, pose, scale, looks.get(name))
    if defect == "scratch":
        _scratch(rng, board, board_mask, scale)
    elif defect == "solder_blob":
        _solder_blob(rng, design, board, board_mask, scale)
    pose = _board_pose(rng, art)
    scene, coverage = _compose(art, board, pose, _conveyor(rng, art))
    mask = (cv2.warpAffine(board_mask, pose, art.size, flags=cv2.INTER_LINEAR) >= 128).astype(np.uint8) * 255
    if defect == "foreign_object":
        _foreign_object(rng, scene, mask, coverage, scale)
    image = _camera(rng, scene, defect, scale)
    has_mask = DEFECT_KINDS.get(defect or "") == "local" or defect in LOGICAL_DEFECT_KINDS
    return image, (mask if has_mask else None)


# ---------------------------------------------------------------------------------------- defects


def _pick_large_part(rng: np.random.Generator, design: _Design) -> _Part:
    """A random part big enough for its absence or displacement to be a visible defect."""
    area = {p.name: cv2.contourArea(design.hull(p.name, (0, 0, 0)).astype(np.float32)) for p in design.parts}
    large = [p for p in design.parts if area[p.name] >= _MIN_DEFECT_PART_AREA]
    return large[rng.integers(len(large))]


def _missing_component(
    rng: np.random.Generator, design: _Design, poses: dict[str, Pose], mask: np.ndarray, scale: float
) -> None:
    """A part was not placed: its bare pads show. Mask: where the part should be."""
    part = _pick_large_part(rng, design)
    del poses[part.name]
    _fill(mask, design.hull(part.name, (part.x, part.y, part.angle)), 255, scale, aa=False)


def _shifted_component(
    rng: np.random.Generator, design: _Design, poses: dict[str, Pose], mask: np.ndarray, scale: float
) -> None:
    """A part was placed 8-14 units off its pads or rotated 15-35/90 deg. Mask: old and new outlines."""
    part = _pick_large_part(rng, design)
    home = (part.x, part.y, part.angle)
    bw, bh = _BOARD_SIZE
    for _ in range(50):
        if part.kind != "electrolytic" and rng.random() < 0.4:  # a turned round can would not show
            quarter = part.w != part.h and rng.random() < 0.5  # a square part looks the same at 90 deg
            turn = 90.0 if quarter else rng.choice([-1, 1]) * rng.uniform(15, 35)
            new = (part.x, part.y, part.angle + turn)
        else:
            a, r = rng.uniform(0, 2 * np.pi), rng.uniform(8, 14)
            new = (part.x + r * np.cos(a), part.y + r * np.sin(a), part.angle)
        hull = design.hull(part.name, new)
        if hull.min() >= 2 and hull[:, 0].max() <= bw - 2 and hull[:, 1].max() <= bh - 2:
            break
    del poses[part.name]  # re-insert last so the moved part is drawn on top of its neighbours
    poses[part.name] = new
    _fill(mask, design.hull(part.name, home), 255, scale, aa=False)
    _fill(mask, hull, 255, scale, aa=False)


def _scratch(rng: np.random.Generator, board: np.ndarray, mask: np.ndarray, scale: float) -> None:
    """A thin, slightly curved, bright copper line across the board. Mask: the line plus its AA fringe."""
    a, length = rng.uniform(0, 2 * np.pi), rng.uniform(60, 110)
    direction = np.array([np.cos(a), np.sin(a)])
    half = np.abs(direction) * length / 2 + 6  # keep the whole scratch on the board
    middle = rng.uniform(half, np.array(_BOARD_SIZE) - half)
    start, end = middle - direction * length / 2, middle + direction * length / 2
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-10, 10)
    t = np.linspace(0, 1, 24)[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * ((start + end) / 2 + bend) + t**2 * end
    colour = tuple(int(c) for c in np.array([150, 200, 240]) * rng.uniform(0.9, 1.05))
    width = rng.uniform(1.2, 2.0)
    _line(board, curve, colour, width, scale)
    _line(mask, curve, 255, width + 2 / scale, scale, aa=False)


def _blob(rng: np.random.Generator, rx: float, ry: float, n: int = 40) -> Poly:
    """An irregular closed outline: an ellipse with smooth random bumps."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    bumps = sum(rng.uniform(-0.12, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1) * (1 + bumps)[:, None]


def _solder_blob(
    rng: np.random.Generator, design: _Design, board: np.ndarray, mask: np.ndarray, scale: float
) -> None:
    """A shiny grey lump of solder bridging several IC pins. Mask: the blob."""
    ic_names = {p.name for p in design.parts if p.kind in ("soic", "qfp")}
    owner, pad = design.pads[rng.choice([i for i, (o, _) in enumerate(design.pads) if o in ic_names])]
    neighbours = [q.mean(axis=0) for o, q in design.pads if o == owner and q is not pad]
    centre = pad.mean(axis=0)
    nearest = min(neighbours, key=lambda q: np.linalg.norm(q - centre))
    along = np.degrees(np.arctan2(*(nearest - centre)[::-1]))
    outline = _pose(_blob(rng, rng.uniform(10, 14), rng.uniform(6, 8)), *centre, along)
    _fill(board, outline, (110, 112, 116), scale)
    _fill(board, centre + 0.8 * (outline - centre), (170, 173, 178), scale)
    _fill(board, centre + 0.3 * (outline - centre) + (-1.5, -1.5), (236, 238, 240), scale)
    _fill(mask, outline, 255, scale, aa=False)


class _Thing(NamedTuple):
    """A foreign object in its own frame (design units), long axis along x."""

    shapes: list[tuple[Poly, Colour]]  # drawn in order
    width: float  # 0: the shapes are filled polygons; > 0: polylines this wide
    opacity: float  # < 1 lets the belt show through


def _screw(rng: np.random.Generator) -> _Thing:
    """A machine screw lying on its side: threaded shaft and a cheese head."""
    length = rng.uniform(24, 32)
    x0 = -length / 2
    shaft = [(_rect(length, 7.0), (135, 137, 141))]
    threads = [(_pose(_rect(0.9, 7.0), x, 0, 20), (80, 82, 86)) for x in np.arange(x0 + 2.5, -x0 - 1, 2.4)]
    head = [(_rect(7, 14, x0 - 3.5), (165, 167, 171)), (_rect(2.2, 12, x0 - 4.5), (220, 222, 225))]
    return _Thing(shaft + threads + head, 0.0, 1.0)


def _wire(rng: np.random.Generator) -> _Thing:
    """A bent offcut of insulated wire with bare copper ends."""
    length = rng.uniform(45, 70)
    t = np.linspace(-0.5, 0.5, 30)
    path = np.stack([t * length, rng.uniform(4, 9) * np.sin(t * np.pi * rng.uniform(1.0, 2.0))], axis=1)
    colour = [(40, 40, 190), (170, 90, 30), (40, 190, 220), (40, 40, 40), (220, 222, 222)][rng.integers(5)]
    copper: Colour = (60, 130, 200)
    return _Thing([(path, colour), (path[:3], copper), (path[-3:], copper)], 3.0, 1.0)


def _tape(rng: np.random.Generator) -> _Thing:
    """A strip of masking tape with torn (jagged) ends."""
    length, width = rng.uniform(26, 36), rng.uniform(11, 15)
    ys = np.linspace(-width / 2, width / 2, 7)
    right = np.stack([length / 2 + rng.uniform(-1.5, 1.5, 7), ys], axis=1)
    left = np.stack([-length / 2 + rng.uniform(-1.5, 1.5, 7), ys[::-1]], axis=1)
    return _Thing([(np.concatenate([right, left]), (150, 200, 222))], 0.0, 0.85)


def _paint(
    img: np.ndarray, shapes: list[tuple[Poly, Colour]], width: float, scale: float, colour: int | None = None
) -> None:
    """Draw a thing's shapes; with ``colour`` (a mask value) as one aliased silhouette instead."""
    for poly, own in shapes:
        if width:
            _line(img, poly, own if colour is None else colour, width, scale, aa=colour is None)
        else:
            _fill(img, poly, own if colour is None else colour, scale, aa=colour is None)


def _foreign_object(
    rng: np.random.Generator, scene: np.ndarray, mask: np.ndarray, coverage: np.ndarray, scale: float
) -> None:
    """A screw, a wire offcut or a piece of tape lying on the conveyor beside the board. Mask: the object."""
    h, w = mask.shape
    keep_out = cv2.dilate((coverage > 0.01).astype(np.uint8), np.ones((5, 5), np.uint8))
    keep_out[:3], keep_out[-3:], keep_out[:, :3], keep_out[:, -3:] = 1, 1, 1, 1
    ys, xs = np.nonzero(coverage > 0.5)
    # the middle line of the conveyor strip on each side of the board, and the strip's direction
    bands = [(xs.min() / 2, None, 90.0), ((w + xs.max()) / 2, None, 90.0)]
    bands += [(None, ys.min() / 2, 0.0), (None, (h + ys.max()) / 2, 0.0)]
    thing = (_screw, _wire, _tape)[rng.integers(3)](rng)
    for _ in range(200):
        bx, by, along = bands[rng.integers(4)]
        x = bx if bx is not None else rng.uniform(0.15, 0.85) * w
        y = by if by is not None else rng.uniform(0.15, 0.85) * h
        pose = (x / scale, y / scale, along + rng.uniform(-25, 25) + rng.choice([0, 180]))
        shapes = [(_pose(poly, *pose), colour) for poly, colour in thing.shapes]
        silhouette = np.zeros_like(mask)
        # a drawn line's antialiased fringe is part of the object: widen line masks by a pixel each side
        _paint(silhouette, shapes, thing.width and thing.width + 2 / scale, scale, colour=255)
        if not (silhouette & keep_out).any():
            break
    else:
        raise RuntimeError("no room on the conveyor for a foreign object; is the frame too small?")
    layer = scene.copy()
    _paint(layer, shapes, thing.width, scale)
    cv2.addWeighted(layer, thing.opacity, scene, 1 - thing.opacity, 0, dst=scene)
    mask |= silhouette


# ------------------------------------------------------------------------------- logical defects
# Each draws nothing broken: it changes which part sits where, how many there are, or their
# orientation, fills the mask with the places concerned and returns {place: (part shown, mirrored)}.


def _chips(design: _Design) -> tuple[list[_Part], list[_Part]]:
    """(resistors, capacitors): same-size chips whose bodies fit each other's pads."""
    return ([p for p in design.parts if p.kind == "resistor"], [p for p in design.parts if p.kind == "capacitor"])


def _mask_parts(design: _Design, names: list[str], mask: np.ndarray, scale: float) -> None:
    for part in design.parts:
        if part.name in names:
            _fill(mask, design.hull(part.name, (part.x, part.y, part.angle)), 255, scale, aa=False)


def _swapped_parts(rng: np.random.Generator, art: _BoardArt, poses: dict[str, Pose], board: np.ndarray,
                   mask: np.ndarray) -> dict[str, tuple[str, bool]]:
    """A resistor and a capacitor exchanged: each is a perfect part on perfect pads, in the other's place."""
    resistors, capacitors = _chips(art.design)
    a, b = resistors[rng.integers(len(resistors))], capacitors[rng.integers(len(capacitors))]
    _mask_parts(art.design, [a.name, b.name], mask, art.scale)
    return {a.name: (b.name, False), b.name: (a.name, False)}


def _wrong_part_type(rng: np.random.Generator, art: _BoardArt, poses: dict[str, Pose], board: np.ndarray,
                     mask: np.ndarray) -> dict[str, tuple[str, bool]]:
    """One chip place holds the other chip type (a capacitor where a resistor belongs, or the reverse)."""
    resistors, capacitors = _chips(art.design)
    place, shown = (resistors, capacitors) if rng.random() < 0.5 else (capacitors, resistors)
    part = place[rng.integers(len(place))]
    _mask_parts(art.design, [part.name], mask, art.scale)
    return {part.name: (shown[rng.integers(len(shown))].name, False)}


def _free_spot(rng: np.random.Generator, art: _BoardArt, part: _Part) -> Pose:
    """A pose for an extra copy of ``part`` (pads and body) on bare board, clear of everything printed."""
    design, footprint = art.design, art.design.footprints[part.name]
    busy = np.zeros(art.layer.shape[:2], np.uint8)
    for p in design.parts:
        _fill(busy, design.hull(p.name, (p.x, p.y, p.angle)), 255, art.scale, aa=False)
    layer = art.layer.astype(np.int16)
    printed = [np.abs(layer - np.array(colour, np.int16)).max(axis=2) > 40 for colour in (_SOLDER_MASK, _TRACE)]
    busy[printed[0] & printed[1]] = 255  # pads, holes, silkscreen (an extra part may cover a trace)
    busy = cv2.dilate(busy, np.ones((int(4 * art.scale) | 1,) * 2, np.uint8))
    bw, bh = _BOARD_SIZE
    for _ in range(500):
        pose = (rng.uniform(16, bw - 16), rng.uniform(16, bh - 16), float(rng.choice([0.0, 90.0])))
        outline = np.zeros_like(busy)
        for poly in [design.hull(part.name, pose), *(_pose(pad, *pose) for pad in footprint.pads)]:
            _fill(outline, poly, 255, art.scale, aa=False)
        if not (outline & busy).any():
            return pose
    raise RuntimeError("no free place on the board for an extra part")


def _one_too_many(rng: np.random.Generator, art: _BoardArt, poses: dict[str, Pose], board: np.ndarray,
                  mask: np.ndarray) -> dict[str, tuple[str, bool]]:
    """An extra resistor or capacitor, with its own pads, on a free patch of board."""
    resistors, capacitors = _chips(art.design)
    chips = resistors + capacitors
    part = chips[rng.integers(len(chips))]
    pose = _free_spot(rng, art, part)
    for pad in art.design.footprints[part.name].pads:
        _fill(board, _pose(pad, *pose), _GOLD, art.scale)
    _fill(mask, art.design.hull(part.name, pose), 255, art.scale, aa=False)
    extra = f"{part.name}+"
    poses[extra] = pose
    return {extra: (part.name, False)}


def _one_too_few(rng: np.random.Generator, art: _BoardArt, poses: dict[str, Pose], board: np.ndarray,
                 mask: np.ndarray) -> dict[str, tuple[str, bool]]:
    """A resistor or capacitor that is not there at all: no part, no pads, no outline (bare board)."""
    resistors, capacitors = _chips(art.design)
    chips = resistors + capacitors
    part = chips[rng.integers(len(chips))]
    del poses[part.name]
    hull = art.design.hull(part.name, (part.x, part.y, part.angle))
    area = hull + np.sign(hull - hull.mean(axis=0)) * 3.0  # the silkscreen box too
    _fill(board, area, _SOLDER_MASK, art.scale)
    _fill(mask, area, 255, art.scale, aa=False)
    return {}


def _mirrored_part(rng: np.random.Generator, art: _BoardArt, poses: dict[str, Pose], board: np.ndarray,
                   mask: np.ndarray) -> dict[str, tuple[str, bool]]:
    """A polarised part (IC pin-1 mark, electrolytic stripe) placed mirrored: perfect, but the wrong way round."""
    polarised = [p for p in art.design.parts if p.kind in ("soic", "qfp", "electrolytic")]
    part = polarised[rng.integers(len(polarised))]
    _mask_parts(art.design, [part.name], mask, art.scale)
    return {part.name: (part.name, True)}


_LOGICAL = {
    "swapped_parts": _swapped_parts,
    "wrong_part_type": _wrong_part_type,
    "one_too_many": _one_too_many,
    "one_too_few": _one_too_few,
    "mirrored_part": _mirrored_part,
}


def _shadow_map(rng: np.random.Generator, size: tuple[int, int], scale: float) -> np.ndarray:
    """Illumination factor of a soft arm-and-hand shadow covering a third to a half of the frame."""
    w, h = size
    factor = rng.uniform(0.45, 0.6)
    for _ in range(100):
        shape = np.zeros((h, w), np.uint8)
        side = rng.integers(4)
        root = [
            (rng.uniform(0.2, 0.8) * w, -20),
            (w + 20, rng.uniform(0.2, 0.8) * h),
            (rng.uniform(0.2, 0.8) * w, h + 20),
            (-20, rng.uniform(0.2, 0.8) * h),
        ][side]
        tip = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
        arm = rng.uniform(0.25, 0.4) * min(w, h)
        _line(shape, np.array([root, tip]) / scale, 255, arm / scale, scale, aa=False)
        _fill(shape, _ellipse(arm * 0.75, arm * 0.6, *tip) / scale, 255, scale, aa=False)
        if 1 / 3 <= (shape > 0).mean() <= 1 / 2:
            break
    soft = cv2.GaussianBlur(shape.astype(np.float32) / 255, (0, 0), 0.05 * min(w, h))
    return 1 - (1 - factor) * soft


# -------------------------------------------------------------------------------------------- API


def generate_boards(
    out_dir: str | Path,
    *,
    n_train: int = 80,
    n_test_good: int = 20,
    n_per_defect: int = 10,
    size: tuple[int, int] = (320, 256),
    seed: int = 0,
    logical: bool = False,
) -> Path:
    """Write the dataset in the MVTec AD layout under out_dir and return out_dir.

    ``train/good`` and ``test/good`` hold good boards, ``test/<defect>`` one folder per entry of
    DEFECT_KINDS, ``ground_truth/<defect>/NNN_mask.png`` (0 normal, 255 defect) the masks of the
    local kinds. ``logical=True`` adds one folder (with masks) per entry of LOGICAL_DEFECT_KINDS,
    leaving every other file as without it. ``size`` is (width, height). The same seed gives
    byte-identical files; existing files with the same names are overwritten, other files are
    left alone.
    """
    out = Path(out_dir)
    art = _BoardArt.build(size)
    folders = [("train", "good", n_train), ("test", "good", n_test_good)]
    folders += [("test", defect, n_per_defect) for defect in DEFECT_KINDS]
    if logical:  # appended, so the streams (and files) of the default kinds stay as they were
        folders += [("test", defect, n_per_defect) for defect in LOGICAL_DEFECT_KINDS]
    for stream, (split, folder, count) in enumerate(folders):
        (out / split / folder).mkdir(parents=True, exist_ok=True)
        if DEFECT_KINDS.get(folder) == "local" or folder in LOGICAL_DEFECT_KINDS:
            (out / "ground_truth" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, stream, i])  # one stream per image: order-independent
            image, mask = _render(art, rng, None if folder == "good" else folder)
            cv2.imwrite(str(out / split / folder / f"{i:03d}.png"), image)
            if mask is not None:
                cv2.imwrite(str(out / "ground_truth" / folder / f"{i:03d}_mask.png"), mask)
    return out
