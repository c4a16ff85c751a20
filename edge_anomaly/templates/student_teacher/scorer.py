"""Student-teacher with a global autoencoder (after EfficientAD, Batzner et al., WACV 2024).

The teacher is the frozen pretrained backbone: its stride-8 features (stage3 by default;
deeper stages, if chosen, are resized onto the stride-8 grid and each stage weighs the same
in the maps), each channel normalised by its mean and spread on the training set. Stage3
resolves what tells parts apart (a body's colour, a pin-1 dot); with stage5 added channel by
channel, its 112 coarse channels drowned stage3's 40. Adding stage5 at equal weight gains
pixel accuracy on natural objects (bottle) and loses part identity (docs/templates/student_teacher.md).
Three small networks (:mod:`.networks`) are trained from scratch on normal images only (:mod:`.training`):

* the student, a shallow fully convolutional net (receptive field 76 px), predicts the
  teacher's features with the hard-feature loss: only the worst-predicted share of feature
  elements counts, so it learns where it is still wrong rather than the easy background.
  A penalty keeps its output near zero on images unlike the training set, so it cannot learn
  to imitate the teacher in general and fails on anything new (local anomalies). Its
  receptive field reaches past the part it predicts to the pads, markings and neighbours
  around it, so it also learns which part belongs where: a part that is perfect but not the
  one its surroundings call for is predicted wrong (swapped, wrong type, mirrored);
* an autoencoder squeezes the whole image through a ``latent_dim`` vector and decodes the
  teacher's features: it knows what the board looks like as a whole, but not the fine detail;
* a second student head predicts the autoencoder's output. Where a part is locally fine but
  misplaced, swapped or missing, the autoencoder (global view) and this head (local view)
  disagree: logical anomalies.

The anomaly map is the local map (teacher vs student) plus half the global map (autoencoder
vs student head, averaged over 3 x 3 cells: the autoencoder resolves no finer, and single-cell
spikes of it flagged good images), each normalised on held-out normal images so that its 90%
quantile maps to 0 and its 99.5% quantile to 0.1. The image score is the map's maximum. The
global map at full weight (EfficientAD's) caught more surface defects on bottle but hid
wrong-type parts on the boards under its noise; half weight kept most of both (docs/templates/student_teacher.md).
Everything at test time is convolutions and elementwise maths, one traceable graph.

The student also trains on copies of each image shifted by 1-7 px (:func:`.augmentation.shifted_copies`):
the teacher's stride-8 features of a small part change with where it falls inside its cell,
and a student that had not learnt that erred on good parts as much as on a wrong one.

Penalty images: EfficientAD uses ImageNet, which this project does not have. The penalty set
is made on the machine (:func:`.augmentation.penalty_images`): procedural textures (blurred colour noise,
random strokes and shapes, stripes) and strongly altered training images (inverted, colour
channels permuted, rotated by 90 degrees). docs/templates/student_teacher.md says what this changed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_anomaly.templates.base import ImageTrainedScorer, aligned_concat
from edge_anomaly.templates.student_teacher.networks import AutoEncoder, Student
from edge_anomaly.templates.student_teacher.params import StudentTeacherParams
from edge_anomaly.templates.student_teacher.training import map_quantiles, train_networks, training_data


class StudentTeacherScorer(ImageTrainedScorer):
    """Teacher features and pixels in, combined local + global map and its maximum out."""

    params_type = StudentTeacherParams
    # (local 90%, local 99.5%, global 90%, global 99.5%) quantiles of held-out normal maps
    NORMALIZATION_QUANTILES = (0.9, 0.995)

    def __init__(self, params: StudentTeacherParams, feature_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__(params, feature_shapes)
        expected = (params.input_size[0] // 8, params.input_size[1] // 8)
        if self.grid != expected:
            raise ValueError(f"layers {params.layers}: the first teacher stage must be at stride 8 "
                             f"(grid {expected}), got grid {self.grid}; use stage3 first")
        self.stage_channels = [shape[0] for shape in feature_shapes]
        # The starting weights come from ``seed``, so two fits with the same params train alike; forking the
        # CPU generator leaves the caller's global torch RNG as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            self.student = Student(params.student_width, params.student_depth, 2 * self.channels)
            self.autoencoder = AutoEncoder(params.input_size, params.latent_dim, self.channels)
        self.register_buffer("teacher_mean", torch.zeros(1, self.channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, self.channels, 1, 1))
        self.register_buffer("map_quantiles", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The normalised teacher features on the stride-8 grid."""
        return (aligned_concat(features, self.grid) - self.teacher_mean) / self.teacher_std

    def maps(self, teacher: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (local, global) maps [N, 1, h, w]: mean squared differences over channels, the global one
        averaged over ``global_smoothing`` cells a side."""
        x = pixels * 2.0 - 1.0
        student = self.student(x)
        auto = self.autoencoder(x)
        local = (teacher - student[:, :self.channels]).pow(2).mean(dim=1, keepdim=True)
        global_ = (auto - student[:, self.channels:]).pow(2).mean(dim=1, keepdim=True)
        # The autoencoder draws the layout from one small vector: its real differences span
        # several cells, while single-cell spikes of the global map are the head's noise and
        # were what pushed good images over the threshold. Local detail stays in the local map.
        k = self.params.global_smoothing
        if k > 1:
            global_ = nn.functional.avg_pool2d(global_, k, stride=1, padding=k // 2, count_include_pad=False)
        return local, global_

    def forward(self, features: list[torch.Tensor], pixels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if pixels is None:
            raise ValueError("the student-teacher scorer needs the input pixels as well as the features")
        local, global_ = self.maps(self.embed(features), pixels)
        q = self.map_quantiles
        # each map's 90% quantile on held-out normal images -> 0, its 99.5% quantile -> 0.1
        local, global_ = (local - q[0]) / (q[1] - q[0]), (global_ - q[2]) / (q[3] - q[2])
        combined = 0.1 * (local + self.params.global_weight * global_)
        return combined, combined.flatten(1).max(dim=1).values

    def fit_images(self, images: np.ndarray, extractor: nn.Module, progress) -> None:
        """Train the student, autoencoder and head on uint8 NHWC normal images (:mod:`.training`)."""
        p = self.params
        if len(images) < 2:
            raise ValueError("student_teacher needs at least two fitting images")
        rng = np.random.default_rng(p.seed)
        generator = torch.Generator().manual_seed(p.seed)
        data = training_data(self, images, extractor, rng, progress)
        self.training_info = train_networks(self, data, generator, progress)
        self.map_quantiles = map_quantiles(self, data.val_pixels, data.val_teacher, self.NORMALIZATION_QUANTILES)
