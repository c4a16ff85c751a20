"""What a real camera does to a part's image: sensor noise, compression, exposure, position, focus.

These are the ordinary variations of a line's capture. Training adds copies of its images
varied within the model's ``capture_tolerance`` (so they read as normal), and evaluation
applies each one to the good test images to show how many good parts a camera's ordinary
variation would flag (``evaluate --capture``). All work on RGB uint8 frames, at the camera's
resolution, before the frame is cropped and resized to the model input.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from runtime.schema import StrictModel

MID_GREY = 128.0


class CaptureTolerance(StrictModel):
    """The capture variation a model must read as normal; training adds ``copies`` varied copies of every image.

    Each copy draws its own shift, exposure, sensor noise and (for half of them) JPEG quality
    within these bounds, so the model learns the whole range and not one fixed setting.
    """

    copies: int = Field(1, ge=0, le=4, description="varied copies of each training image (0: none)")
    noise_sigma: float = Field(3.5, ge=0.0, le=20.0, description="sensor noise added, up to this many grey levels "
                               "(at mid-grey, part of it signal-dependent), on top of the images' own")
    jpeg_quality: int = Field(50, ge=10, le=100, description="lowest JPEG quality of the copies (half are JPEG-coded)")
    exposure: float = Field(0.15, ge=0.0, le=0.5, description="exposure change, as a share either way (0.15: x0.85 "
                            "to x1.15)")
    shift_px: int = Field(4, ge=0, le=32, description="shift of the part, in whole image pixels either way")
    rotation_deg: float = Field(0.0, ge=0.0, le=10.0, description="rotation of the part, in degrees either way (its "
                                "interpolation also smooths the image's own noise, which then reads as less than the "
                                "camera's: keep 0 unless parts turn)")


def varied_copy(rgb: np.ndarray, tolerance: CaptureTolerance, rng: np.random.Generator) -> np.ndarray:
    """One copy of a frame varied within ``tolerance``, in the camera's order: optics, lamp, sensor, codec."""
    # Whole-pixel shifts: a sub-pixel one interpolates, and so averages away, the image's own sensor noise.
    shift = tolerance.shift_px
    out = move(rgb, int(rng.integers(-shift, shift + 1)), int(rng.integers(-shift, shift + 1)),
               rng.uniform(-tolerance.rotation_deg, tolerance.rotation_deg))
    out = exposure(out, rng.uniform(1.0 - tolerance.exposure, 1.0 + tolerance.exposure))
    out = sensor_noise(out, rng.uniform(0.0, tolerance.noise_sigma), rng, shot_share=rng.uniform())
    if rng.uniform() < 0.5:
        out = jpeg(out, int(rng.integers(tolerance.jpeg_quality, 96)))
    return out


def sensor_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator, shot_share: float = 0.0) -> np.ndarray:
    """Gaussian-Poisson sensor noise of standard deviation ``sigma`` grey levels at mid-grey.

    ``shot_share`` of the variance at mid-grey is signal-dependent (photon shot noise, growing
    with the pixel's level), the rest is read noise (the same everywhere).
    """
    if sigma <= 0:
        return rgb.copy()
    level = rgb.astype(np.float32)
    variance = sigma**2 * ((1.0 - shot_share) + shot_share * level / MID_GREY)
    noisy = level + rng.standard_normal(rgb.shape, dtype=np.float32) * np.sqrt(variance)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` round-tripped through OpenCV's JPEG codec at ``quality`` (1-100)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {rgb.shape}")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def exposure(rgb: np.ndarray, gain: float) -> np.ndarray:
    """A lamp or exposure time ``gain`` times the original (clipped at white)."""
    return np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def move(rgb: np.ndarray, dx: float = 0.0, dy: float = 0.0, degrees: float = 0.0) -> np.ndarray:
    """The part shifted by (dx, dy) pixels and turned by ``degrees`` about the centre; borders reflected."""
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    matrix[:, 2] += (dx, dy)
    whole = degrees == 0 and float(dx).is_integer() and float(dy).is_integer()
    return cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_NEAREST if whole else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def defocus(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` pixels (a lens slightly out of focus)."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0 else rgb.copy()
