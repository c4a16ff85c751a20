"""A trained model: the graph, its decision numbers, and the model folder on disk.

The folder is plain data: ``model.json`` (template, hyperparameters, input format,
threshold and normalisation, training-set fingerprint, versions, file hashes) and
``weights.safetensors``. Loading executes no code and refuses files whose hash changed.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import edge_anomaly
from edge_anomaly.backbones import FeatureExtractor, normalization_for
from edge_anomaly.graph import AnomalyGraph
from edge_anomaly.templates import TemplateParams, get_template
from runtime.bundle import sha256_file
from runtime.preprocess import frame_to_input, inspected_region
from runtime.result import CONCEPTS, Result
from runtime.scoring import Scoring

MODEL_FORMAT = "edge-anomaly-model"
SCHEMA_VERSION = 1
METADATA_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


def build_graph(template_name: str, params: TemplateParams) -> AnomalyGraph:
    """An unfitted graph (random backbone weights, empty scorer) for the given settings."""
    template = get_template(template_name)
    extractor = FeatureExtractor(params.backbone, params.layers, params.input_size).eval()
    scorer = template.scorer(params, extractor.feature_shapes(params.input_size))
    return AnomalyGraph(extractor, scorer, params.input_size, params.heatmap_sigma).eval()


@torch.no_grad()
def run_graph(graph: AnomalyGraph, inputs: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (heatmaps [N, H, W], scores [N]) for uint8 NHWC inputs at the model size."""
    heatmaps, scores = [], []
    for start in range(0, len(inputs), batch_size):
        heatmap, score = graph(torch.from_numpy(inputs[start:start + batch_size]))
        heatmaps.append(heatmap.numpy())
        scores.append(score.numpy())
    if not heatmaps:
        return np.zeros((0, *graph.input_size), np.float32), np.zeros(0, np.float32)
    return np.concatenate(heatmaps), np.concatenate(scores)


# Hyperparameters of earlier versions that no longer exist (the threshold now holds a false-alarm rate).
RETIRED_PARAMS = ("threshold_quantile", "threshold_margin")


def _current_params(params: dict) -> dict:
    """Saved hyperparameters with retired ones dropped, so older model folders still load."""
    return {key: value for key, value in params.items() if key not in RETIRED_PARAMS}


@dataclass
class TrainedModel:
    template: str
    params: TemplateParams
    graph: AnomalyGraph
    scoring: Scoring
    info: dict = field(default_factory=dict)  # training-set fingerprint, timings, versions

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.params.input_size)

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return run_graph(self.graph, inputs, self.params.batch_size)

    def predict(self, frames: list[np.ndarray]) -> list[Result]:
        """Verdicts for RGB uint8 frames of any size; heatmaps come back at each frame's size.

        Only the model's region of interest is inspected, as an exported bundle does.
        """
        start = time.perf_counter()
        regions = [inspected_region(f.shape[:2], self.params.roi, self.params.center_crop) for f in frames]
        inputs = np.stack([frame_to_input(f, self.input_size, region=r) for f, r in zip(frames, regions, strict=True)])
        heatmaps, scores = self.infer(inputs)
        latency = (time.perf_counter() - start) * 1000 / max(len(frames), 1)
        return [self.scoring.decide(float(s), h, x, f.shape[:2], latency, region=r)
                for s, h, x, f, r in zip(scores, heatmaps, inputs, frames, regions, strict=True)]

    def metadata(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "template": self.template,
            "params": self.params.model_dump(mode="json"),
            "input": {
                "size": list(self.input_size),
                "layout": "NHWC",
                "dtype": "uint8",
                "color_order": "RGB",
                "normalization": normalization_for(self.params.backbone),
                "roi": None if self.params.roi is None else list(self.params.roi),
                "center_crop": self.params.center_crop,
            },
            "outputs": {"heatmap": "raw score per input pixel [N, H, W]", "score": "raw image score [N]"},
            "scoring": self.scoring.to_dict(),
            "concepts": list(CONCEPTS),
            "info": self.info,
            "versions": {
                "edge_anomaly": edge_anomaly.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {key: value.contiguous() for key, value in self.graph.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE)
        metadata = self.metadata()
        metadata["files"] = {WEIGHTS_FILE: sha256_file(folder / WEIGHTS_FILE)}
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedModel:
        folder = Path(folder)
        meta_path = folder / METADATA_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: not a model folder (no {METADATA_FILE})")
        metadata = json.loads(meta_path.read_text())
        if metadata.get("format") != MODEL_FORMAT or metadata.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{meta_path}: not an edge-anomaly model of schema {SCHEMA_VERSION}")
        files = metadata.get("files", {})
        if WEIGHTS_FILE not in files:
            raise ValueError(f"{meta_path}: no hash recorded for {WEIGHTS_FILE}")
        for name, expected in files.items():
            actual = sha256_file(folder / name)
            if actual != expected:
                raise ValueError(f"{folder / name}: SHA-256 mismatch (expected {expected[:12]}…, got {actual[:12]}…)")
        template = get_template(metadata["template"])
        params = template.params.model_validate(_current_params(metadata["params"]))
        graph = build_graph(metadata["template"], params)
        state = load_file(folder / WEIGHTS_FILE)
        graph.scorer.load_fitted({k.removeprefix("scorer."): v for k, v in state.items() if k.startswith("scorer.")})
        graph.extractor.load_state_dict({k.removeprefix("extractor."): v for k, v in state.items()
                                         if k.startswith("extractor.")})
        return cls(metadata["template"], params, graph, Scoring.from_dict(metadata["scoring"]), metadata["info"])
