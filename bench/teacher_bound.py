"""How well the teacher's features alone tell the boards' logical defects apart, as a markdown table.

    python -m bench.teacher_bound                                   # stage3 + stage5, channel by channel
    python -m bench.teacher_bound --layers stage3                   # stage3 alone (the student-teacher default)
    python -m bench.teacher_bound --equal-stages                    # stage3 + stage5, each stage weighing the same

No training: every test board's feature at each stride-8 cell is compared with the features
of all training boards at the same cell and its 8 neighbours (they shift by a few pixels);
the image score is the largest nearest-neighbour distance. A model that learns what belongs
where can hardly tell apart what these features do not, so this bounds which teacher stages
are worth predicting (README, "Choosing the student-teacher template"). The boards are
generated as ``python -m bench.accuracy --logical --boards-test 40 20`` makes them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from edge_anomaly.backbones import build_extractor
from edge_anomaly.data.folders import load_inputs
from edge_anomaly.data.synthetic import LOGICAL_DEFECT_KINDS, generate_boards
from edge_anomaly.data.training_set import TrainingSet, input_size_for
from edge_anomaly.templates.base import aligned_concat
from edge_anomaly.templates.student_teacher import stage_weights
from runtime.image_io import list_images


def features(extractor: torch.nn.Module, folder: Path, size: tuple[int, int]) -> torch.Tensor:
    """[N, C, H/8, W/8] teacher features of every image in ``folder``."""
    images, _ = load_inputs(list_images(folder), size)
    grid = (size[0] // 8, size[1] // 8)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 8):
            pixels = torch.from_numpy(images[start:start + 8]).permute(0, 3, 1, 2).float() / 255.0
            out.append(aligned_concat(extractor(pixels), grid))
    return torch.cat(out)


def nearest_at_same_place(test: torch.Tensor, train: torch.Tensor, reach: int = 1) -> np.ndarray:
    """Per test image, the largest over cells of the distance to the nearest training feature
    at that cell or within ``reach`` cells of it."""
    scores = []
    for image in test:
        best = torch.full(image.shape[1:], float("inf"))
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                shifted = torch.roll(train, (dy, dx), (2, 3))
                best = torch.minimum(best, (image[None] - shifted).pow(2).mean(1).min(0).values)
        scores.append(float(best.max()))
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["stage3", "stage5"])
    parser.add_argument("--equal-stages", action="store_true", help="each stage weighs the same (else each channel)")
    parser.add_argument("--max-input-pixels", type=int, default=256 * 256)
    parser.add_argument("--data", help="boards folder (default: generated, 40 good and 20 per kind)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else generate_boards(Path(tmp) / "boards", logical=True,
                                                                n_test_good=40, n_per_defect=20)
        # the data's own aspect ratio, as fitting derives it (a --data folder need not be 5:4 like the boards)
        size = input_size_for(TrainingSet.scan(data).aspect_ratio(None, None), args.max_input_pixels)
        extractor = build_extractor("efficientnet-lite0", args.layers, size)
        train = features(extractor, data / "train" / "good", size)
        mean = train.mean(dim=(0, 2, 3), keepdim=True)
        std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4)
        if args.equal_stages:  # as the student-teacher weighs several stages
            channels = [shape[0] for shape in extractor.feature_shapes(size)]
            std = std * stage_weights(channels).float().view(1, -1, 1, 1)
        train = (train - mean) / std
        good = nearest_at_same_place((features(extractor, data / "test" / "good", size) - mean) / std, train)
        weighting = "each stage the same" if args.equal_stages else "each channel the same"
        print(f"\nteacher {' + '.join(args.layers)} ({weighting}), input {size[0]} x {size[1]}: image AUROC of "
              f"the nearest training feature at the same place\n\n| logical defect | image AUROC |\n| --- | ---: |")
        for kind in LOGICAL_DEFECT_KINDS:
            bad = nearest_at_same_place((features(extractor, data / "test" / kind, size) - mean) / std, train)
            auroc = roc_auc_score([0] * len(good) + [1] * len(bad), np.concatenate([good, bad]))
            print(f"| {kind} | {auroc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
