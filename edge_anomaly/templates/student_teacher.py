"""Student-teacher with a global autoencoder (after EfficientAD, Batzner et al., WACV 2024).

The teacher is the frozen pretrained backbone: its stride-8 features (stage3 by default;
deeper stages, if chosen, are resized onto the stride-8 grid and each stage weighs the same
in the maps), each channel normalised by its mean and spread on the training set. Stage3
resolves what tells parts apart (a body's colour, a pin-1 dot); with stage5 added channel by
channel, its 112 coarse channels drowned stage3's 40. Adding stage5 at equal weight gains
pixel accuracy on natural objects (bottle) and loses part identity (README, Guide).
Three small networks are trained from scratch on normal images only:

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
wrong-type parts on the boards under its noise; half weight kept most of both (README, Guide).
Everything at test time is convolutions and elementwise maths, one traceable graph.

The student also trains on copies of each image shifted by 1-7 px (:func:`shifted_copies`):
the teacher's stride-8 features of a small part change with where it falls inside its cell,
and a student that had not learnt that erred on good parts as much as on a wrong one.

Penalty images: EfficientAD uses ImageNet, which this project does not have. The penalty set
is made on the machine (:func:`penalty_images`): procedural textures (blurred colour noise,
random strokes and shapes, stripes) and strongly altered training images (inverted, colour
channels permuted, rotated by 90 degrees). README.md (Guide) says what this changed.
"""

from __future__ import annotations

import copy
import math
import time

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from edge_anomaly.templates.base import Scorer, TemplateParams, aligned_concat


class StudentTeacherParams(TemplateParams):
    layers: list[str] = Field(["stage3"], description="teacher stages, each weighing the same in the maps; the "
                              "first must sit at stride 8 (stage3: its detail tells part types and orientations apart)")
    iterations: int = Field(2000, ge=1, description="training steps (each one batch_size images)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate (cosine decay to 5% over the run)")
    student_width: int = Field(64, ge=8, le=512, description="channels of the student's layers")
    student_depth: int = Field(4, ge=1, le=12, description="3x3 convolutions after the student's stem: its receptive "
                               "field is 12 + 16 * depth px; more context tells it which part belongs where")
    global_smoothing: int = Field(3, ge=1, le=9, description="cells (odd) the global map is averaged over before "
                                  "it joins the local one: the autoencoder resolves no finer, its spikes are noise")
    global_weight: float = Field(0.5, ge=0.0, le=4.0, description="weight of the normalised global map against "
                                 "the local one (EfficientAD: 1); at 1 it helped surface defects on bottle and hid "
                                 "wrong-type parts on the boards")
    latent_dim: int = Field(64, ge=4, le=1024, description="autoencoder bottleneck: one vector per image")
    hard_quantile: float = Field(0.99, ge=0.0, lt=1.0,
                                 description="hard-feature loss: only elements above this quantile count")
    penalty_weight: float = Field(1.0, ge=0.0, description="weight of the student-output penalty on penalty images")
    validation_fraction: float = Field(0.1, gt=0.0, le=0.5,
                                       description="share of fitting images held out to stop early and normalise maps")
    shifted_copies: int = Field(3, ge=0, le=8, description="copies of each training image shifted by a few "
                                "pixels (less than one feature cell): the teacher's stride-8 features change with "
                                "sub-cell position, and the student learns that instead of erring on it")
    eval_every: int = Field(50, ge=1, description="iterations between validation losses")
    patience: int = Field(8, ge=1, description="stop after this many validations without improvement")

    @model_validator(mode="after")
    def _sizes_fit(self) -> StudentTeacherParams:
        if self.global_smoothing % 2 == 0:
            raise ValueError(f"global_smoothing={self.global_smoothing} must be odd (the map keeps its size)")
        if self.eval_every > self.iterations:
            raise ValueError(f"eval_every={self.eval_every} exceeds iterations={self.iterations}")
        return self


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


def hard_feature_loss(distance: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean of the elements at or above the ``quantile`` of ``distance`` (EfficientAD eq. 1)."""
    flat = distance.flatten()
    count = max(1, int(round(flat.numel() * (1.0 - quantile))))
    return flat.topk(count, sorted=False).values.mean()


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


def stage_weights(stage_channels: list[int]) -> torch.Tensor:
    """Per-channel divisor (float64) of the teacher's spread that gives every stage the same share of the maps.

    The maps average squared differences over channels, so a deep stage with many channels
    (stage5: 112 of 152) would drown the stride-8 stage (40) that resolves small details: a
    pin-1 mark, a chip's body colour. Folded into ``teacher_std``, so the graph is unchanged.
    """
    total = sum(stage_channels)
    return torch.cat([torch.full((c,), (len(stage_channels) * c / total) ** 0.5, dtype=torch.float64)
                      for c in stage_channels])


class StudentTeacherScorer(Scorer):
    """Teacher features and pixels in, combined local + global map and its maximum out."""

    params_type = StudentTeacherParams
    fits_on_images = True
    # (local 90%, local 99.5%, global 90%, global 99.5%) quantiles of held-out normal maps
    NORMALIZATION_QUANTILES = (0.9, 0.995)

    def __init__(self, params: StudentTeacherParams, feature_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.params = params
        self.grid = tuple(feature_shapes[0][1:])
        expected = (params.input_size[0] // 8, params.input_size[1] // 8)
        if self.grid != expected:
            raise ValueError(f"layers {params.layers}: the first teacher stage must be at stride 8 "
                             f"(grid {expected}), got grid {self.grid}; use stage3 first")
        self.stage_channels = [shape[0] for shape in feature_shapes]
        self.channels = sum(self.stage_channels)
        self.student = Student(params.student_width, params.student_depth, 2 * self.channels)
        self.autoencoder = AutoEncoder(params.input_size, params.latent_dim, self.channels)
        self.register_buffer("teacher_mean", torch.zeros(1, self.channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, self.channels, 1, 1))
        self.register_buffer("map_quantiles", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    # ------------------------------------------------------------------ inference

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

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Every tensor has a fixed shape, so the ordinary strict load applies."""
        self.load_state_dict(state)

    # ------------------------------------------------------------------ training

    def fit_images(self, images: np.ndarray, extractor: nn.Module, progress) -> None:
        """Train the student, autoencoder and head on uint8 NHWC normal images.

        A ``validation_fraction`` of them is kept aside: its losses stop training early (the
        best weights are kept) and its maps set the normalisation quantiles.
        """
        p = self.params
        if len(images) < 2:
            raise ValueError("student_teacher needs at least two fitting images")
        torch.manual_seed(p.seed)
        rng = np.random.default_rng(p.seed)
        generator = torch.Generator().manual_seed(p.seed)
        order = rng.permutation(len(images))
        n_val = min(max(1, round(len(images) * p.validation_fraction)), len(images) - 1)
        train, val = images[np.sort(order[n_val:])], images[np.sort(order[:n_val])]
        penalty = penalty_images(train, max(4 * p.batch_size, 64), rng)
        train = shifted_copies(train, p.shifted_copies, rng)
        extractor.eval().requires_grad_(False)

        def pixels_of(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0

        def teacher_of(pixels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return aligned_concat(extractor(pixels), self.grid)

        # The teacher is frozen: its features of every training image are computed once (kept
        # in FP16 to halve the memory), which makes a training step about 4x cheaper on a CPU.
        task = progress.add_task("teacher features", total=len(train))
        cached = []
        for start in range(0, len(train), p.batch_size):
            cached.append(teacher_of(pixels_of(train[start:start + p.batch_size])))
            progress.advance(task, len(cached[-1]))
        features = torch.cat(cached)
        del cached
        mean = features.double().mean(dim=(0, 2, 3))
        std = features.double().std(dim=(0, 2, 3)).clamp_min(1e-4) * stage_weights(self.stage_channels)
        self.teacher_mean = mean.float().view(1, -1, 1, 1)
        self.teacher_std = std.float().view(1, -1, 1, 1)
        features = ((features - self.teacher_mean) / self.teacher_std).half()

        modules = nn.ModuleList([self.student, self.autoencoder]).train().requires_grad_(True)
        optimizer = torch.optim.Adam(modules.parameters(), lr=p.lr, weight_decay=1e-5)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, p.iterations, eta_min=0.05 * p.lr)
        val_pixels = [pixels_of(val[s:s + p.batch_size]) for s in range(0, len(val), p.batch_size)]
        val_teacher = [(teacher_of(x) - self.teacher_mean) / self.teacher_std for x in val_pixels]
        best, best_loss, stale, history = None, math.inf, 0, []
        task = progress.add_task("training student_teacher", total=p.iterations)
        started = time.perf_counter()
        for step in range(1, p.iterations + 1):
            pick = torch.randint(len(train), (min(p.batch_size, len(train)),), generator=generator)
            teacher = features[pick].float()
            scaled = pixels_of(train[pick.numpy()]) * 2.0 - 1.0
            student = self.student(scaled)
            auto = self.autoencoder(scaled)
            loss_st = hard_feature_loss((teacher - student[:, :self.channels]).pow(2), p.hard_quantile)
            loss_ae = (teacher - auto).pow(2).mean()
            loss_stae = (auto.detach() - student[:, self.channels:]).pow(2).mean()
            loss = loss_st + loss_ae + loss_stae
            if p.penalty_weight > 0:
                chosen = torch.randint(len(penalty), (max(1, p.batch_size // 2),), generator=generator)
                off_target = self.student(pixels_of(penalty[chosen.numpy()]) * 2.0 - 1.0)[:, :self.channels]
                loss = loss + p.penalty_weight * off_target.pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update(task, completed=step, description=f"training (loss {loss.item():.3f})")
            if step % p.eval_every == 0 or step == p.iterations:
                val_loss = self._validation_loss(val_pixels, val_teacher)
                history.append((step, round(loss.item(), 4), round(val_loss, 4)))
                if val_loss < best_loss:
                    best, best_loss, stale = copy.deepcopy(modules.state_dict()), val_loss, 0
                else:
                    stale += 1
                    if stale >= p.patience:
                        break
        self.training_info = {"iterations": step, "train_seconds": round(time.perf_counter() - started, 1),
                              "losses (step, training, validation)": history}
        modules.load_state_dict(best)
        modules.eval().requires_grad_(False)
        self.map_quantiles = self._normalization(val_pixels, val_teacher)

    @torch.no_grad()
    def _validation_loss(self, pixels: list[torch.Tensor], teachers: list[torch.Tensor]) -> float:
        """Mean local plus global map value on the validation images (what a normal image scores)."""
        self.student.eval()
        self.autoencoder.eval()
        total = 0.0
        for x, teacher in zip(pixels, teachers, strict=True):
            local, global_ = self.maps(teacher, x)
            total += float((local.mean(dim=(1, 2, 3)) + global_.mean(dim=(1, 2, 3)) +
                            (teacher - self.autoencoder(x * 2 - 1)).pow(2).mean(dim=(1, 2, 3))).sum())
        self.student.train()
        self.autoencoder.train()
        return total / sum(len(x) for x in pixels)

    @torch.no_grad()
    def _normalization(self, pixels: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
        """(local q90, local q99.5, global q90, global q99.5) of the validation maps."""
        locals_, globals_ = zip(*(self.maps(t, x) for x, t in zip(pixels, teachers, strict=True)), strict=True)
        low, high = self.NORMALIZATION_QUANTILES
        values = []
        for maps in (torch.cat(locals_).flatten(), torch.cat(globals_).flatten()):
            q_low, q_high = float(torch.quantile(maps, low)), float(torch.quantile(maps, high))
            values += [q_low, max(q_high, q_low + 1e-6)]
        return torch.tensor(values)

