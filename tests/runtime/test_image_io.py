"""Every image format a camera or dataset hands over becomes the same RGB uint8 pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.image_io import ImageReadError, list_images, read_image, to_rgb8, write_image


def test_reads_gray_16bit_bgra_and_bgr_to_rgb8(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "color.png"), bgr)
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((4, 5), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "deep.tif"), np.full((4, 5), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([bgr, np.full((4, 5), 9, np.uint8)]))

    color = read_image(tmp_path / "color.png")
    assert color.shape == (4, 5, 3) and color.dtype == np.uint8
    assert color[0, 0].tolist() == [0, 0, 200]  # blue ends up in the last RGB channel
    assert read_image(tmp_path / "gray.png")[0, 0].tolist() == [77, 77, 77]
    assert read_image(tmp_path / "deep.tif")[0, 0].tolist() == [255, 255, 255]
    assert read_image(tmp_path / "alpha.png")[0, 0].tolist() == [0, 0, 200]


def test_sixteen_bit_keeps_exposure_rather_than_stretching():
    dark = np.full((2, 2), 4096, np.uint16)  # a dark 16-bit frame must stay dark
    assert to_rgb8(dark)[0, 0, 0] == 16


def test_corrupt_file_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_list_images_filters_and_sorts(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", "c.bmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.bmp"]


def test_write_then_read_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    write_image(tmp_path / "sub" / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "sub" / "x.png"), rgb)
