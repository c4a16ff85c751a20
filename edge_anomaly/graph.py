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


def upsample_blur_matrix(size_in: int, size_out: int, kernel: torch.Tensor) -> torch.Tensor:
    """[size_out, size_in]: bilinear upsampling (align_corners=False) then a 1-D blur with
    reflected borders, as one linear map. Column i is where a unit impulse at input i lands."""
    impulses = torch.eye(size_in).view(size_in, 1, size_in, 1)
    upsampled = nn.functional.interpolate(impulses, size=(size_out, 1), mode="bilinear", align_corners=False)
    radius = kernel.numel() // 2
    if radius:
        padded = nn.functional.pad(upsampled, (0, 0, radius, radius), mode="reflect")
        upsampled = nn.functional.conv2d(padded, kernel.view(1, 1, -1, 1))
    return upsampled[:, 0, :, 0].T.contiguous()


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
        # Bilinear upsampling and the separable Gaussian are both linear and separable, so the
        # pair is one small matrix per axis applied to the patch map ([H, h] @ map @ [w, W]):
        # the same heatmap as upsampling then blurring at input size, for a fraction of the work.
        grid_h, grid_w = scorer.grid
        self.register_buffer("rows_map", upsample_blur_matrix(grid_h, self.input_size[0], kernel), persistent=False)
        self.register_buffer("cols_map", upsample_blur_matrix(grid_w, self.input_size[1], kernel).T.contiguous(),
                             persistent=False)

    def heatmap(self, patch_map: torch.Tensor) -> torch.Tensor:
        """[N, 1, h, w] patch scores -> [N, H, W] upsampled, Gaussian-smoothed heatmap."""
        return self.rows_map @ patch_map[:, 0] @ self.cols_map

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        patch_map, score = self.scorer(self.extractor(pixels), pixels)
        return self.heatmap(patch_map), score
