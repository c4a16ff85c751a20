"""The whole detector as one module: uint8 pixels in, heatmap and image score out.

PyTorch inference, evaluation and every exporter run this same module, so an exported engine
can only differ from the trained model by numerics, never by a forgotten step.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_anomaly.backbones import FeatureExtractor
from edge_anomaly.templates.base import Scorer


def gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius 4 sigma (the PatchCore/anomalib convention)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


class AnomalyGraph(nn.Module):
    """[N, H, W, 3] uint8 RGB at the model's input size -> ([N, H, W] heatmap, [N] score).

    Both outputs are raw template scores; thresholds and normalisation are applied outside,
    from numbers stored with the model, so they survive any export.
    """

    def __init__(self, extractor: FeatureExtractor, scorer: Scorer, input_size: tuple[int, int],
                 heatmap_sigma: float) -> None:
        super().__init__()
        self.extractor = extractor.to(memory_format=torch.channels_last)  # 2-3x faster convs on CPU
        self.scorer = scorer
        self.input_size = tuple(input_size)
        self.heatmap_sigma = heatmap_sigma
        kernel = gaussian_kernel_1d(heatmap_sigma) if heatmap_sigma > 0 else torch.ones(1)
        self.register_buffer("smooth_h", kernel.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("smooth_v", kernel.view(1, 1, -1, 1), persistent=False)

    def smooth(self, heatmap: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with reflected borders, [N, 1, H, W]."""
        radius = self.smooth_h.shape[-1] // 2
        if radius == 0:
            return heatmap
        padded = nn.functional.pad(heatmap, (radius, radius, 0, 0), mode="reflect")
        heatmap = nn.functional.conv2d(padded, self.smooth_h)
        padded = nn.functional.pad(heatmap, (0, 0, radius, radius), mode="reflect")
        return nn.functional.conv2d(padded, self.smooth_v)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        patch_map, score = self.scorer(self.extractor(pixels), pixels)
        heatmap = nn.functional.interpolate(patch_map, size=self.input_size, mode="bilinear", align_corners=False)
        return self.smooth(heatmap)[:, 0], score

