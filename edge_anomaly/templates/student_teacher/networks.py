"""The three networks the student-teacher trains from scratch: the student (with its second head) and the
autoencoder. Both start with the same cheap stride-8 stem."""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _patchify(width: int) -> list[nn.Module]:
    """Stride-8 stem: 4x4 pixel blocks to channels, then a stride-2 convolution.

    Cheaper to train on a CPU than full-resolution convolutions (their backward pass is the
    slow part) and it keeps the receptive field small: a student that sees too much learns to
    imitate the teacher in general.
    """
    return [nn.PixelUnshuffle(4), _conv(48, width, 3, 2), nn.ReLU(inplace=True)]


class Student(nn.Module):
    """Pixels (scaled to [-1, 1]) -> [N, 2C, H/8, W/8]: teacher prediction, then autoencoder prediction.

    The stem, ``depth`` 3x3 convolutions at stride 8 and a 1x1 head: a receptive field of
    12 + 16 * depth px (76 px at the default depth 4).
    """

    def __init__(self, width: int, depth: int, out_channels: int) -> None:
        super().__init__()
        body: list[nn.Module] = []
        for _ in range(depth):
            body += [_conv(width, width, 3), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*_patchify(width), *body, nn.Conv2d(width, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AutoEncoder(nn.Module):
    """Pixels -> one ``latent`` vector per image -> [N, C, H/8, W/8] teacher features.

    The encoder reaches stride 32 (the stem, then two stride-2 convolutions), then a
    convolution as large as what is left (H/32 x W/32, any aspect ratio) makes the vector. The
    decoder resizes it up to the grid in doubling steps, each followed by a convolution.
    """

    def __init__(self, input_size: tuple[int, int], latent: int, out_channels: int, width: int = 64) -> None:
        super().__init__()
        h, w = input_size
        self.encoder = nn.Sequential(
            *_patchify(width),
            _conv(width, width, 3, 2), nn.ReLU(inplace=True),
            _conv(width, width, 3, 2), nn.ReLU(inplace=True),
            nn.Conv2d(width, latent, (h // 32, w // 32)),
        )
        grid = (h // 8, w // 8)
        self.sizes = [(math.ceil(grid[0] / 2**k), math.ceil(grid[1] / 2**k)) for k in (3, 2, 1, 0)]
        self.decoder = nn.ModuleList(
            [_conv(latent, width, 3)] + [_conv(width, width, 3) for _ in self.sizes[1:]]
        )
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        for size, conv in zip(self.sizes, self.decoder, strict=True):
            x = torch.relu(conv(nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)))
        return self.head(x)
