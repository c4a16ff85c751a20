"""Heatmap pictures: region boxes, overlays, colours, thumbnails, and the torch-free import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime.visualize import anomaly_regions, colorize, draw_regions, overlay_heatmap, thumbnail

REPO = Path(__file__).resolve().parents[2]


def _two_blobs() -> np.ndarray:
    heatmap = np.full((100, 120), 0.2, dtype=np.float32)
    heatmap[10:20, 30:45] = 0.8  # 15 x 10 = 150 px
    heatmap[50:80, 60:100] = 0.9  # 40 x 30 = 1200 px
    heatmap[95, 5] = 0.9  # 1 px speckle, under min_area
    return heatmap


def test_anomaly_regions_boxes_largest_first():
    assert anomaly_regions(_two_blobs()) == [(60, 50, 40, 30), (30, 10, 15, 10)]
    assert anomaly_regions(_two_blobs(), threshold=0.85) == [(60, 50, 40, 30)]
    assert anomaly_regions(_two_blobs(), min_area=1)[-1] == (5, 95, 1, 1)
    assert anomaly_regions(np.zeros((10, 10))) == []


def test_overlay_keeps_shape_and_dtype_and_alpha_zero_is_identity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(200, 240, 3), dtype=np.uint8)
    out = overlay_heatmap(image, _two_blobs())  # heatmap at half resolution: resized
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.array_equal(overlay_heatmap(image, _two_blobs(), alpha=0.0), image)
    full = overlay_heatmap(image, _two_blobs(), alpha=1.0)
    hot, cold = _resized_blobs() >= 0.5, _resized_blobs() <= 0.25
    assert np.array_equal(full[hot], colorize(_resized_blobs())[hot])  # at and past the threshold: the colour
    assert np.array_equal(full[cold], image[cold])  # clearly normal (0.2): the part's own pixels, readable


def _resized_blobs() -> np.ndarray:
    return cv2.resize(_two_blobs(), (240, 200), interpolation=cv2.INTER_LINEAR)


def test_colorize_maps_low_and_high_to_blue_and_red():
    colours = colorize(np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]]))
    assert colours.shape == (1, 5, 3) and colours.dtype == np.uint8
    low, zero, mid, one, high = colours[0].astype(int)
    assert np.array_equal(low, zero) and np.array_equal(high, one)  # clipped to [0, 1]
    assert zero[2] > zero[0]  # RGB: blue at 0
    assert one[0] > one[2]  # red at 1
    assert not np.array_equal(zero, one) and not np.array_equal(mid, zero)


def test_draw_regions_outlines_only_the_region_border():
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    out = draw_regions(image, _two_blobs())
    assert out.shape == image.shape and not image.any()  # drawn on a copy
    assert (out[50, 60:100] == 255).all()  # top edge of the large blob
    assert not out[65, 80].any()  # inside stays untouched
    assert not out[0:5, 0:20].any()  # far from any region


def test_thumbnail_stays_inside_the_image_at_the_border():
    image = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3).astype(np.uint8)
    # Box touching the bottom-right corner: padding (2 px, 1 px) is clipped at the edge.
    crop = thumbnail(image, (90, 95, 10, 5), size=12, pad=0.2)
    assert np.array_equal(crop, image[94:100, 88:100])
    # Top-left corner, upscaled: long side becomes `size`, aspect kept.
    out = thumbnail(image, (0, 0, 20, 10), size=64, pad=0.5)
    assert out.shape == (32, 64, 3)  # crop x 0..30, y 0..15 (30 x 15) scaled to 64 x 32
    # A box lying outside the image still yields a 1-pixel crop from inside it.
    assert thumbnail(image, (150, 150, 10, 10), size=8).shape == (8, 8, 3)


def test_import_pulls_in_no_training_stack():
    code = (
        "import sys, runtime.visualize; "
        "bad = [m for m in ('torch', 'sklearn', 'matplotlib', 'edge_anomaly') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
