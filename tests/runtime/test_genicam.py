"""The GenICam source against a real GigE Vision stream (Debian's fake camera on 127.0.0.1): free run, software
trigger, a camera killed and back; and the Bayer conversion on a synthetic mosaic."""

from __future__ import annotations

import time

import numpy as np
import pytest

from runtime.genicam import CONVERSIONS, GenicamSettings, GenicamSource
from runtime.sources import SourceError
from tests.harness.fake_camera import FakeCamera, aravis_or_skip


@pytest.fixture
def camera():
    aravis_or_skip()
    fake = FakeCamera().start()
    yield fake
    fake.kill()


def test_bayer_rggb_becomes_red_where_the_red_sites_are_bright():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255  # BayerRG8: R at even rows and columns, the rest G and B at 0
    import cv2

    rgb = cv2.cvtColor(mosaic, CONVERSIONS["BayerRG8"])
    assert rgb[2:6, 2:6, 0].min() > 200 and rgb[2:6, 2:6, 1:].max() < 60


def test_settings_refuse_what_a_camera_cannot_mean():
    with pytest.raises(ValueError, match="pixel_format"):
        GenicamSettings(pixel_format="YUV422")
    with pytest.raises(ValueError, match="trigger"):
        GenicamSettings(trigger="sometimes")


def test_free_run_at_a_line_cameras_size_carries_the_cameras_frame_ids(camera):
    source = GenicamSource(GenicamSettings(camera=camera.serial, frame_rate=30, roi=(0, 0, 1280, 1024)))
    try:
        frames = [source.read() for _ in range(10)]
    finally:
        source.close()
    assert {f.image.shape for f in frames} == {(1024, 1280, 3)} and frames[0].image.dtype == np.uint8
    ids = [f.camera_frame["frame_id"] for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 10
    stamps = [f.camera_frame["timestamp_ns"] for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    assert source.status.frames == 10 and source.status.missing_packets == 0
    assert source.status.camera.endswith(camera.serial)


def test_software_trigger_exposes_one_frame_per_read_and_none_between(camera):
    source = GenicamSource(GenicamSettings(camera=camera.serial, trigger="software", pixel_format="BayerRG8"))
    try:
        ids = [source.read().camera_frame["frame_id"] for _ in range(5)]
        time.sleep(0.3)
        source._drain()  # whatever arrived without a trigger is counted as skipped
    finally:
        source.close()
    assert ids == list(range(ids[0], ids[0] + 5))  # consecutive: each trigger made exactly one frame
    assert source.status.skipped == 0


def test_a_camera_killed_raises_source_error_and_opens_again_when_back(camera):
    source = GenicamSource(GenicamSettings(camera=camera.serial, timeout_s=0.5))
    source.read()
    camera.kill()
    with pytest.raises(SourceError, match="no frame within"):
        for _ in range(20):
            source.read()
    source.close()
    with pytest.raises(SourceError):
        GenicamSource(GenicamSettings(camera=camera.serial, timeout_s=0.5))
    camera.start()
    again = GenicamSource(GenicamSettings(camera=camera.serial))
    try:
        assert again.read().image.ndim == 3
    finally:
        again.close()
