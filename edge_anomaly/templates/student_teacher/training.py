"""Training the student-teacher's networks, in functions a step each.

The teacher is frozen: its features of every training image are computed once (kept in FP16
to halve the memory), which makes a training step about 4x cheaper on a CPU. A
``validation_fraction`` of the images is kept aside: its losses stop training early (the best
weights are kept) and its maps set the normalisation quantiles.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edge_anomaly.templates.base import aligned_concat, pixel_batch
from edge_anomaly.templates.student_teacher.augmentation import penalty_images, shifted_copies

if TYPE_CHECKING:
    from edge_anomaly.templates.student_teacher.scorer import StudentTeacherScorer


def hard_feature_loss(distance: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean of the elements at or above the ``quantile`` of ``distance`` (EfficientAD eq. 1)."""
    flat = distance.flatten()
    count = max(1, int(round(flat.numel() * (1.0 - quantile))))
    return flat.topk(count, sorted=False).values.mean()


def stage_weights(stage_channels: list[int]) -> torch.Tensor:
    """Per-channel divisor (float64) of the teacher's spread that gives every stage the same share of the maps.

    The maps average squared differences over channels, so a deep stage with many channels
    (stage5: 112 of 152) would drown the stride-8 stage (40) that resolves small details: a
    pin-1 mark, a chip's body colour. Folded into ``teacher_std``, so the graph is unchanged.
    """
    total = sum(stage_channels)
    return torch.cat([torch.full((c,), (len(stage_channels) * c / total) ** 0.5, dtype=torch.float64)
                      for c in stage_channels])


@dataclass(frozen=True)
class TrainingData:
    """What the training steps draw from."""

    train: np.ndarray  # uint8 NHWC training images followed by their shifted copies
    features: torch.Tensor  # their normalised teacher features, FP16
    penalty: np.ndarray  # uint8 NHWC images unlike the normal ones
    val_pixels: list[torch.Tensor]  # the validation images, in batches
    val_teacher: list[torch.Tensor]  # their normalised teacher features


def split_validation(images: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) images: at least one of each, each in its original order."""
    order = rng.permutation(len(images))
    n_val = min(max(1, round(len(images) * fraction)), len(images) - 1)
    return images[np.sort(order[n_val:])], images[np.sort(order[:n_val])]


@torch.no_grad()
def cached_teacher_features(extractor: nn.Module, images: np.ndarray, grid: tuple[int, int], batch_size: int,
                            progress) -> torch.Tensor:
    """The frozen teacher's features of every image on the stride-8 grid."""
    task = progress.add_task("teacher features", total=len(images))
    cached = []
    for start in range(0, len(images), batch_size):
        cached.append(aligned_concat(extractor(pixel_batch(images[start:start + batch_size])), grid))
        progress.advance(task, len(cached[-1]))
    return torch.cat(cached)


def fit_teacher_normalization(scorer: StudentTeacherScorer, features: torch.Tensor) -> torch.Tensor:
    """Set the scorer's per-channel teacher mean and spread (each stage weighing the same) from ``features``;
    return them normalised, in FP16."""
    mean = features.double().mean(dim=(0, 2, 3))
    std = features.double().std(dim=(0, 2, 3)).clamp_min(1e-4) * stage_weights(scorer.stage_channels)
    scorer.teacher_mean = mean.float().view(1, -1, 1, 1)
    scorer.teacher_std = std.float().view(1, -1, 1, 1)
    return ((features - scorer.teacher_mean) / scorer.teacher_std).half()


def training_data(scorer: StudentTeacherScorer, images: np.ndarray, extractor: nn.Module,
                  rng: np.random.Generator, progress) -> TrainingData:
    """Split off the validation images, make the penalty images and shifted copies, cache the teacher."""
    p = scorer.params
    train, val = split_validation(images, p.validation_fraction, rng)
    penalty = penalty_images(train, max(4 * p.batch_size, 64), rng)
    train = shifted_copies(train, p.shifted_copies, rng)
    extractor.eval().requires_grad_(False)
    features = cached_teacher_features(extractor, train, scorer.grid, p.batch_size, progress)
    features = fit_teacher_normalization(scorer, features)
    val_pixels = [pixel_batch(val[s:s + p.batch_size]) for s in range(0, len(val), p.batch_size)]
    with torch.no_grad():
        val_teacher = [scorer.embed(extractor(x)) for x in val_pixels]
    return TrainingData(train, features, penalty, val_pixels, val_teacher)


def step_loss(scorer: StudentTeacherScorer, data: TrainingData, generator: torch.Generator) -> torch.Tensor:
    """One batch's loss: hard-feature student loss, autoencoder loss, head loss, and the penalty."""
    p, channels = scorer.params, scorer.channels
    pick = torch.randint(len(data.train), (min(p.batch_size, len(data.train)),), generator=generator)
    teacher = data.features[pick].float()
    scaled = pixel_batch(data.train[pick.numpy()]) * 2.0 - 1.0
    student = scorer.student(scaled)
    auto = scorer.autoencoder(scaled)
    loss_st = hard_feature_loss((teacher - student[:, :channels]).pow(2), p.hard_quantile)
    loss_ae = (teacher - auto).pow(2).mean()
    loss_stae = (auto.detach() - student[:, channels:]).pow(2).mean()
    loss = loss_st + loss_ae + loss_stae
    if p.penalty_weight > 0:
        chosen = torch.randint(len(data.penalty), (max(1, p.batch_size // 2),), generator=generator)
        off_target = scorer.student(pixel_batch(data.penalty[chosen.numpy()]) * 2.0 - 1.0)[:, :channels]
        loss = loss + p.penalty_weight * off_target.pow(2).mean()
    return loss


def train_networks(scorer: StudentTeacherScorer, data: TrainingData, generator: torch.Generator,
                   progress) -> dict:
    """Adam steps (cosine decay to 5%) until ``iterations`` or ``patience`` validations without improvement;
    leaves the best weights in place, in eval mode, and returns what training did (``training_info``)."""
    p = scorer.params
    modules = nn.ModuleList([scorer.student, scorer.autoencoder]).train().requires_grad_(True)
    optimizer = torch.optim.Adam(modules.parameters(), lr=p.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, p.iterations, eta_min=0.05 * p.lr)
    best, best_loss, stale, history = None, math.inf, 0, []
    task = progress.add_task("training student_teacher", total=p.iterations)
    started = time.perf_counter()
    for step in range(1, p.iterations + 1):
        loss = step_loss(scorer, data, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.update(task, completed=step, description=f"training (loss {loss.item():.3f})")
        if step % p.eval_every == 0 or step == p.iterations:
            val_loss = validation_loss(scorer, data.val_pixels, data.val_teacher)
            history.append((step, round(loss.item(), 4), round(val_loss, 4)))
            if val_loss < best_loss:
                best, best_loss, stale = copy.deepcopy(modules.state_dict()), val_loss, 0
            else:
                stale += 1
                if stale >= p.patience:
                    break
    info = {"iterations": step, "train_seconds": round(time.perf_counter() - started, 1),
            "losses (step, training, validation)": history}
    modules.load_state_dict(best)
    modules.eval().requires_grad_(False)
    return info


@torch.no_grad()
def validation_loss(scorer: StudentTeacherScorer, pixels: list[torch.Tensor], teachers: list[torch.Tensor]) -> float:
    """Mean local plus global map value on the validation images (what a normal image scores)."""
    scorer.student.eval()
    scorer.autoencoder.eval()
    total = 0.0
    for x, teacher in zip(pixels, teachers, strict=True):
        local, global_ = scorer.maps(teacher, x)
        total += float((local.mean(dim=(1, 2, 3)) + global_.mean(dim=(1, 2, 3)) +
                        (teacher - scorer.autoencoder(x * 2 - 1)).pow(2).mean(dim=(1, 2, 3))).sum())
    scorer.student.train()
    scorer.autoencoder.train()
    return total / sum(len(x) for x in pixels)


@torch.no_grad()
def map_quantiles(scorer: StudentTeacherScorer, pixels: list[torch.Tensor], teachers: list[torch.Tensor],
                  quantiles: tuple[float, float]) -> torch.Tensor:
    """(local low, local high, global low, global high) ``quantiles`` of the validation maps."""
    locals_, globals_ = zip(*(scorer.maps(t, x) for x, t in zip(pixels, teachers, strict=True)), strict=True)
    low, high = quantiles
    values = []
    for maps in (torch.cat(locals_).flatten(), torch.cat(globals_).flatten()):
        q_low, q_high = float(torch.quantile(maps, low)), float(torch.quantile(maps, high))
        values += [q_low, max(q_high, q_low + 1e-6)]
    return torch.tensor(values)
