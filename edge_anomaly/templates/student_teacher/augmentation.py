"""What the student trains on besides the normal images: penalty images unlike them, and shifted copies."""

from __future__ import annotations

import cv2
import numpy as np


def penalty_images(images: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uint8 NHWC images unlike the normal ones, made on the machine.

    Half are procedural textures (blurred colour noise at a random scale, random strokes,
    ellipses and stripes), half are training images strongly altered (inverted, colour
    channels permuted, rotated 90 degrees where square). They stand in for EfficientAD's
    ImageNet penalty: the student learns to answer near zero for anything that is not the
    normal scene.
    """
    n, h, w, _ = images.shape
    out = np.empty((count, h, w, 3), np.uint8)
    for i in range(count):
        if i % 2 == 0:
            sigma = rng.uniform(0.5, 12.0)
            noise = rng.standard_normal((h, w, 3)).astype(np.float32)
            texture = cv2.GaussianBlur(noise, (0, 0), sigma)
            texture = (texture - texture.mean()) / (texture.std() + 1e-6) * rng.uniform(20, 70) + rng.uniform(60, 190)
            canvas = np.clip(texture, 0, 255).astype(np.uint8)
            for _ in range(rng.integers(3, 12)):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                x0, y0, x1, y1 = (int(v) for v in rng.integers(0, [w, h, w, h]))
                shape = rng.integers(3)
                if shape == 0:
                    cv2.line(canvas, (x0, y0), (x1, y1), colour, int(rng.integers(1, 8)), cv2.LINE_AA)
                elif shape == 1:
                    axes = (int(rng.integers(3, w // 4)), int(rng.integers(3, h // 4)))
                    cv2.ellipse(canvas, (x0, y0), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
                else:
                    period = int(rng.integers(4, 24))
                    stripes = (np.arange(w) // period % 2).astype(bool)
                    canvas[y0 // 2: y0 // 2 + h // 3, stripes] = colour
            out[i] = canvas
        else:
            image = images[rng.integers(n)]
            image = 255 - image if rng.random() < 0.5 else image[..., rng.permutation(3)]
            if h == w:
                image = np.rot90(image, int(rng.integers(1, 4)))
            out[i] = image
    return out


def shifted_copies(images: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """``images`` followed by ``copies`` of each translated by a random 1-7 px in x and y (borders reflected).

    Less than the teacher's 8 px cell, so nothing moves to another part's place: the layout
    stays, only where each part falls inside its cell changes, as it does between shots.
    """
    _, h, w, _ = images.shape
    out = [images]
    for _ in range(copies):
        moved = np.empty_like(images)
        for i, image in enumerate(images):
            dx, dy = rng.integers(1, 8, 2) * rng.choice([-1, 1], 2)
            shift = np.float32([[1, 0, dx], [0, 1, dy]])
            moved[i] = cv2.warpAffine(image, shift, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        out.append(moved)
    return np.concatenate(out)
