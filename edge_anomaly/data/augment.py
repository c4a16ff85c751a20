"""Compressed copies of training images, so that compression artefacts read as normal.

A model fitted on lossless PNGs sees a camera's JPEG or H.264 blocking and ringing as defects
(good video frames of a part scored far above its PNGs). Adding re-encoded copies of the
training images teaches the model those artefacts.

What OpenCV offers for video (opencv-python-headless 5.0 wheels, measured): its FFmpeg
writer has no H.264 software encoder (``avc1`` only maps to a hardware encoder that is
usually absent), so MPEG-4 Part 2 (``mp4v``) is the fallback; ``VIDEOWRITER_PROP_QUALITY``
applies only to OpenCV's own MJPEG writer, and neither the frame rate nor
``VIDEOWRITER_PROP_KEY_INTERVAL`` changes the encoded bits. The one knob that does vary the
effective bitrate is the encoded resolution: each clip is written downscaled by a factor
from VIDEO_SCALES and upscaled back after decoding (about 32, 28 and 26 dB PSNR on the
generated boards, a noisy worst case; cleaner images score higher).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_anomaly.data.capture import jpeg
from edge_anomaly.data.video import sample_video_frames, write_video

AUGMENTATIONS = ("jpeg", "video")
JPEG_QUALITIES = (60, 90)  # inclusive range each copy's quality is drawn from
VIDEO_SCALES = (1.0, 0.85, 0.7)  # encoded size relative to the image: lower = fewer bits per pixel
_VIDEO_FPS = 10.0


def compressed_copies(images: np.ndarray, kinds: Sequence[str], seed: int) -> np.ndarray:
    """One re-encoded copy of every image per kind in ``kinds``, as uint8 NHWC (kind after kind).

    "jpeg" re-encodes each image at a quality drawn from JPEG_QUALITIES; "video" writes the
    images as short clips (one per scale of VIDEO_SCALES, each image drawn to one) through
    OpenCV's video writer and reads them back. The same seed gives the same copies.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected uint8 NHWC RGB images, got shape {images.shape} {images.dtype}")
    unknown = [kind for kind in kinds if kind not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augment: unknown kind(s) {unknown}; choose from {list(AUGMENTATIONS)}")
    rng = np.random.default_rng(seed)
    copies = []
    for kind in kinds:
        if kind == "jpeg":
            qualities = rng.integers(JPEG_QUALITIES[0], JPEG_QUALITIES[1] + 1, len(images))
            copies.append(np.stack([jpeg(image, int(q)) for image, q in zip(images, qualities, strict=True)]))
        else:
            copies.append(_video(images, rng.integers(0, len(VIDEO_SCALES), len(images))))
    if not copies:
        return np.zeros((0, *images.shape[1:]), np.uint8)
    return np.concatenate(copies)


def _video(images: np.ndarray, scale_of_image: np.ndarray) -> np.ndarray:
    """Each image round-tripped through a clip encoded at its scale, in the input order."""
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-augment-") as folder:
        for scale_index, scale in enumerate(VIDEO_SCALES):
            chosen = np.flatnonzero(scale_of_image == scale_index)
            if chosen.size == 0:
                continue
            # Codecs want even sides; the clip is resized back to the image size after decoding.
            size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
            small = [cv2.resize(images[i], size, interpolation=cv2.INTER_AREA) for i in chosen]
            clip = write_video(Path(folder) / f"scale{scale_index}.mp4", small, _VIDEO_FPS, video_codec())
            decoded = sample_video_frames(clip)
            if len(decoded) != chosen.size:
                raise RuntimeError(f"{clip}: {chosen.size} images written but {len(decoded)} frames read back")
            for index, rgb in zip(chosen, decoded, strict=True):
                out[index] = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


@functools.cache
def video_codec() -> str:
    """``avc1`` (H.264) when this OpenCV build can encode it, else ``mp4v`` (MPEG-4 Part 2)."""
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-codec-") as folder, _quiet_stderr():
        writer = cv2.VideoWriter(str(Path(folder) / "probe.mp4"), cv2.VideoWriter_fourcc(*"avc1"), _VIDEO_FPS,
                                 (64, 64))
        available = writer.isOpened()
        writer.release()
    return "avc1" if available else "mp4v"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence FFmpeg's C-level complaints while probing an encoder that may be missing."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
