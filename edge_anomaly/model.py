"""A trained model: the graph, its decision numbers, and the model folder on disk.

The folder is plain data: ``model.json`` (the model card, ``edge_anomaly.model_card``: template,
hyperparameters, input format, threshold and normalisation, training-set fingerprint, versions,
file hashes),
``weights.safetensors`` and ``calibration.safetensors`` (the held-out normal scores and the
training images' global statistics, so that a model can be updated and recalibrated without
its original images). Loading executes no code and refuses files whose hash changed.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

import edge_anomaly
from edge_anomaly.backbones import FeatureExtractor, build_extractor, normalization_for
from edge_anomaly.graph import AnomalyGraph
from edge_anomaly.model_card import (
    METADATA_FILE,
    MODEL_FORMAT,
    OUTPUTS,
    SCHEMA_VERSION,
    ModelCard,
    read_card,
    write_card,
)
from edge_anomaly.templates import TemplateParams, get_template
from runtime.bundle import sha256_file
from runtime.global_stats import capture_statistics
from runtime.manifest import CaptureSection, InputSpec
from runtime.preprocess import frame_to_input, inspected_region
from runtime.result import CONCEPTS, Result
from runtime.scoring import Scoring

WEIGHTS_FILE = "weights.safetensors"
CALIBRATION_FILE = "calibration.safetensors"


def build_graph(template_name: str, params: TemplateParams, pretrained: bool = False) -> AnomalyGraph:
    """An unfitted graph (empty scorer) for the given settings: with the backbone's pretrained weights to fit it
    (``pretrained``), else random ones, which a saved model's weights replace."""
    template = get_template(template_name)
    extractor = build_extractor(params.backbone, params.layers, params.input_size, params.backbone_weights) \
        if pretrained else FeatureExtractor(params.backbone, params.layers, params.input_size).eval()
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


@dataclass(frozen=True)
class CalibrationData:
    """What the threshold and the global checks were calibrated on, kept so an update can recalibrate.

    ``normal_scores`` are the raw held-out (k-fold) score of every training image (and
    augmented copy); ``image_stats`` the whole-image statistics of every original training
    image, in the order of ``runtime.global_stats.STAT_NAMES``, and ``capture_stats`` their
    capture statistics (``CAPTURE_STATS``). ``varied_image_stats`` and ``varied_capture_stats``
    are the same for the copies varied within the capture tolerance, which calibrate the global
    checks beside the originals (the drift reference is the originals alone). The last three are
    None in models made before them.
    """

    normal_scores: np.ndarray
    image_stats: np.ndarray
    capture_stats: np.ndarray | None = None
    varied_image_stats: np.ndarray | None = None
    varied_capture_stats: np.ndarray | None = None

    def checked_stats(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(whole-image statistics, capture statistics or None) that calibrate the global checks."""
        image = self.image_stats if self.varied_image_stats is None else np.concatenate(
            [self.image_stats, self.varied_image_stats])
        if self.capture_stats is None:
            return image, None
        capture = self.capture_stats if self.varied_capture_stats is None else np.concatenate(
            [self.capture_stats, self.varied_capture_stats])
        return image, capture

    def save(self, path: Path) -> None:
        arrays = {name: getattr(self, name) for name in _CALIBRATION_ARRAYS if getattr(self, name) is not None}
        save_arrays({name: np.ascontiguousarray(a, np.float64) for name, a in arrays.items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> CalibrationData:
        arrays = load_arrays(str(path))
        expected_dims = dict(zip(_CALIBRATION_ARRAYS, (1, 2, 2, 2, 2), strict=True))
        if not {"normal_scores", "image_stats"} <= set(arrays) <= set(_CALIBRATION_ARRAYS) \
                or any(a.ndim != expected_dims[name] for name, a in arrays.items()):
            raise ValueError(f"{path}: expected 1-D normal_scores, 2-D image_stats and optionally 2-D "
                             f"{', '.join(_CALIBRATION_ARRAYS[2:])}, got "
                             f"{ {name: list(a.shape) for name, a in arrays.items()} }")
        return cls(**arrays)


_CALIBRATION_ARRAYS = ("normal_scores", "image_stats", "capture_stats", "varied_image_stats", "varied_capture_stats")


@dataclass
class TrainedModel:
    template: str
    params: TemplateParams
    graph: AnomalyGraph
    scoring: Scoring
    info: dict = field(default_factory=dict)  # training-set fingerprint, timings, versions
    calibration_data: CalibrationData | None = None  # absent in models saved before it was kept
    capture_profile: CaptureSection | None = None  # what the training frames were (absent in models before it)

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
        capture = [capture_statistics(f, r) if self.scoring.checks_capture else None
                   for f, r in zip(frames, regions, strict=True)]
        heatmaps, scores = self.infer(inputs)
        latency = (time.perf_counter() - start) * 1000 / max(len(frames), 1)
        return [self.scoring.decide(float(s), h, x, f.shape[:2], latency, region=r, capture=c)
                for s, h, x, f, r, c in zip(scores, heatmaps, inputs, frames, regions, capture, strict=True)]

    def card(self) -> ModelCard:
        """What ``model.json`` records, without the file hashes (:meth:`save` adds them)."""
        return ModelCard(
            format=MODEL_FORMAT,
            schema_version=SCHEMA_VERSION,
            template=self.template,
            params=self.params.model_dump(mode="json"),
            input=InputSpec(size=self.input_size, normalization=normalization_for(self.params.backbone),
                            roi=self.params.roi, center_crop=self.params.center_crop),
            outputs=OUTPUTS,
            scoring=self.scoring,
            concepts=list(CONCEPTS),
            capture=self.capture_profile,
            info=self.info,
            versions={
                "edge_anomaly": edge_anomaly.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        )

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {key: value.contiguous() for key, value in self.graph.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE)
        names = [WEIGHTS_FILE]
        if self.calibration_data is not None:
            self.calibration_data.save(folder / CALIBRATION_FILE)
            names.append(CALIBRATION_FILE)
        card = self.card().model_copy(update={"files": {name: sha256_file(folder / name) for name in names}})
        write_card(folder / METADATA_FILE, card)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedModel:
        folder = Path(folder)
        meta_path = folder / METADATA_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: not a model folder (no {METADATA_FILE})")
        card = read_card(meta_path)
        files = card.files
        if WEIGHTS_FILE not in files:
            raise ValueError(f"{meta_path}: no hash recorded for {WEIGHTS_FILE}")
        for name, expected in files.items():
            actual = sha256_file(folder / name)
            if actual != expected:
                raise ValueError(f"{folder / name}: SHA-256 mismatch (expected {expected[:12]}…, got {actual[:12]}…)")
        template = get_template(card.template)
        params = template.params.model_validate(template.params.migrate(card.params))
        graph = build_graph(card.template, params)
        state = load_file(folder / WEIGHTS_FILE)
        graph.scorer.load_fitted({k.removeprefix("scorer."): v for k, v in state.items() if k.startswith("scorer.")})
        graph.extractor.load_state_dict({k.removeprefix("extractor."): v for k, v in state.items()
                                         if k.startswith("extractor.")})
        calibration = CalibrationData.load(folder / CALIBRATION_FILE) if CALIBRATION_FILE in files else None
        return cls(card.template, params, graph, card.scoring, card.info, calibration, card.capture)
