"""Training frames from real mp4 files and compressed copies of training images."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edge_anomaly.data import video
from edge_anomaly.data.augment import AUGMENTATIONS, compressed_copies, video_codec
from edge_anomaly.data.synthetic import generate_boards
from edge_anomaly.data.video import is_video, sample_video_frames, write_video
from runtime.image_io import ImageReadError, read_image


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> np.ndarray:
    """Six real-looking RGB board images (160x128)."""
    root = generate_boards(tmp_path_factory.mktemp("boards"), n_train=6, n_test_good=0, n_per_defect=0,
                           size=(160, 128))
    return np.stack([read_image(path) for path in sorted((root / "train" / "good").glob("*.png"))])


def _numbered(count: int) -> list[np.ndarray]:
    """Frames whose mean grey level tells their index (10, 30, 50, ...), robust to compression."""
    return [np.full((64, 96, 3), 10 + 20 * index, np.uint8) for index in range(count)]


def test_sampling_every_nth_and_max_frames_from_a_real_mp4(tmp_path):
    clip = write_video(tmp_path / "line.mp4", _numbered(12), fps=10)
    assert is_video(clip) and not is_video(tmp_path / "x.png")

    def levels(frames):
        return [round((float(f.mean()) - 10) / 20) for f in frames]

    everything = sample_video_frames(clip)
    assert levels(everything) == list(range(12))
    assert everything[0].shape == (64, 96, 3) and everything[0].dtype == np.uint8
    assert levels(sample_video_frames(clip, every_nth=3)) == [0, 3, 6, 9]
    assert levels(sample_video_frames(clip, every_nth=2, max_frames=4)) == [0, 2, 4, 6]


def test_unopenable_and_oversized_videos_name_the_file(tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ImageReadError, match="corrupt.mp4"):
        sample_video_frames(corrupt)
    with pytest.raises(ImageReadError, match="absent.mp4"):
        sample_video_frames(tmp_path / "absent.mp4")
    clip = write_video(tmp_path / "big.mp4", _numbered(2), fps=5)
    monkeypatch.setattr(video, "MAX_SAMPLED_BYTES", 96 * 64 * 3)  # room for one frame, not two
    with pytest.raises(ValueError, match=r"big.mp4: more than .* after 1 frames; sample fewer"):
        sample_video_frames(clip)
    assert len(sample_video_frames(clip, max_frames=1)) == 1
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 64 * 64)
    with pytest.raises(ValueError, match=r"big.mp4: frames of 96x64 exceed"):
        sample_video_frames(clip)


def test_an_undecodable_frame_is_skipped_with_a_warning_naming_file_and_frame(tmp_path, caplog):
    clip = write_video(tmp_path / "damaged.avi", _numbered(10), fps=10, codec="MJPG")
    data = bytearray(clip.read_bytes())
    jpeg_starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd8"]
    assert len(jpeg_starts) == 10  # one JPEG per frame
    data[jpeg_starts[5]:jpeg_starts[5] + 200] = bytes(200)  # frame 5 loses its JPEG header
    clip.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        frames = sample_video_frames(clip)
    assert [round((float(f.mean()) - 10) / 20) for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert any("damaged.avi frame 5" in message for message in messages), messages
    assert any("damaged.avi: skipped 1 undecodable frame" in message for message in messages), messages


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(a, b))


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_compressed_copies_are_plausible_deterministic_and_bounded(boards, kind):
    copies = compressed_copies(boards, [kind], seed=3)
    assert copies.shape == boards.shape and copies.dtype == np.uint8
    psnr = [_psnr(original, copy) for original, copy in zip(boards, copies, strict=True)]
    assert all(25.0 <= value <= 45.0 for value in psnr), psnr  # compressed, not destroyed, not untouched
    assert np.array_equal(copies, compressed_copies(boards, [kind], seed=3))


def test_compressed_copies_of_both_kinds_and_bad_input(boards):
    both = compressed_copies(boards[:2], ["jpeg", "video"], seed=0)
    assert both.shape == (4, *boards.shape[1:])
    assert video_codec() in ("avc1", "mp4v")
    with pytest.raises(ValueError, match="'png'"):
        compressed_copies(boards, ["png"], seed=0)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        compressed_copies(boards[0], ["jpeg"], seed=0)
