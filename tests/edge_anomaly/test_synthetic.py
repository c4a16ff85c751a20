"""The synthetic PCB dataset: MVTec AD layout, masks, determinism, and defects that are what they say."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_anomaly.data.synthetic import DEFECT_KINDS, LOGICAL_DEFECT_KINDS, generate_boards

COUNTS = {"n_train": 4, "n_test_good": 2, "n_per_defect": 2}
LOCAL = [d for d, kind in DEFECT_KINDS.items() if kind == "local"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_boards(tmp_path_factory.mktemp("boards") / "pcb", seed=0, **COUNTS)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _grey(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY).astype(np.float32)


def _coarse(grey: np.ndarray) -> np.ndarray:
    """8x smaller: insensitive to the few-pixel pose jitter, sensitive to lighting."""
    h, w = grey.shape
    return cv2.resize(grey, (w // 8, h // 8), interpolation=cv2.INTER_AREA)


def _sharpness(path: Path) -> float:
    return float(cv2.Laplacian(_grey(path), cv2.CV_32F).var())


def test_defect_kinds_are_kinds_the_verdict_names() -> None:
    """Every generated defect is one of the verdict's kinds, and the demo has each of local, lighting and blur."""
    assert set(DEFECT_KINDS.values()) == {"local", "lighting", "blur"}
    assert set(LOGICAL_DEFECT_KINDS.values()) == {"logical"}
    assert not set(DEFECT_KINDS) & set(LOGICAL_DEFECT_KINDS)


def test_layout_and_counts(dataset: Path) -> None:
    assert _names(dataset) == ["ground_truth", "test", "train"]
    assert _names(dataset / "train") == ["good"]
    assert _names(dataset / "train" / "good") == ["000.png", "001.png", "002.png", "003.png"]
    assert _names(dataset / "test") == sorted(["good", *DEFECT_KINDS])
    for folder in ["good", *DEFECT_KINDS]:
        assert _names(dataset / "test" / folder) == ["000.png", "001.png"]
    assert _names(dataset / "ground_truth") == sorted(LOCAL)
    for defect in LOCAL:
        assert _names(dataset / "ground_truth" / defect) == ["000_mask.png", "001_mask.png"]


def test_images_have_the_requested_size(tmp_path: Path) -> None:
    out = generate_boards(tmp_path, n_train=1, n_test_good=0, n_per_defect=1, size=(200, 160))
    assert out == tmp_path
    for path in out.rglob("*.png"):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == ((160, 200) if path.name.endswith("_mask.png") else (160, 200, 3)), path


@pytest.mark.parametrize("defect", LOCAL)
def test_masks_are_binary_and_sized_sanely(dataset: Path, defect: str) -> None:
    for i in range(COUNTS["n_per_defect"]):
        mask = cv2.imread(str(dataset / "ground_truth" / defect / f"{i:03d}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (256, 320)
        assert set(np.unique(mask)) == {0, 255}
        assert 0.001 <= (mask > 0).mean() <= 0.05, f"{defect} {i}: {(mask > 0).mean():.4f}"


def test_defects_change_pixels_inside_their_masks(dataset: Path) -> None:
    """A mask marks where the defect is: the image differs from a good board there more than elsewhere."""
    good = np.mean([_grey(p) for p in sorted((dataset / "train" / "good").glob("*.png"))], axis=0)
    for defect in LOCAL:
        image = _grey(dataset / "test" / defect / "000.png")
        mask = cv2.imread(str(dataset / "ground_truth" / defect / "000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        diff = np.abs(image - good)
        assert diff[mask].mean() > 2 * diff[~mask].mean(), defect


def test_same_seed_is_byte_identical(dataset: Path, tmp_path: Path) -> None:
    again = generate_boards(tmp_path / "pcb", seed=0, **COUNTS)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_other_seed_gives_other_good_images(dataset: Path, tmp_path: Path) -> None:
    other = generate_boards(tmp_path, n_train=2, n_test_good=0, n_per_defect=0, seed=1)
    for name in ["000.png", "001.png"]:
        assert not np.array_equal(
            _grey(dataset / "train" / "good" / name), _grey(other / "train" / "good" / name)
        )


def test_good_images_differ_only_slightly(dataset: Path) -> None:
    goods = [_grey(p) for p in sorted(dataset.glob("*/good/*.png"))]
    assert len(goods) == 6
    for i, a in enumerate(goods):
        for b in goods[i + 1 :]:
            assert 0 < np.abs(a - b).mean() < 30  # full resolution: pose jitter shows on edges
            assert np.abs(_coarse(a) - _coarse(b)).mean() < 20  # coarse: only exposure differs


def test_lighting_defects_are_outside_the_nuisance_range(dataset: Path) -> None:
    good_means = [_grey(p).mean() for p in dataset.glob("*/good/*.png")]
    for path in (dataset / "test" / "too_dark").glob("*.png"):
        assert _grey(path).mean() < 0.75 * min(good_means)
    for path in (dataset / "test" / "too_bright").glob("*.png"):
        assert _grey(path).mean() > 1.25 * max(good_means)


def test_shadow_darkens_a_large_part_of_the_frame(dataset: Path) -> None:
    reference = _coarse(np.mean([_grey(p) for p in (dataset / "train" / "good").glob("*.png")], axis=0))

    def darkened(path: Path) -> float:
        return float((_coarse(_grey(path)) < 0.75 * reference).mean())

    for path in (dataset / "test" / "good").glob("*.png"):
        assert darkened(path) < 0.1
    for path in (dataset / "test" / "shadow").glob("*.png"):
        assert darkened(path) > 0.2


def test_blur_is_less_sharp_than_every_good_image(dataset: Path) -> None:
    least_sharp_good = min(_sharpness(p) for p in dataset.glob("*/good/*.png"))
    for path in (dataset / "test" / "blur").glob("*.png"):
        assert _sharpness(path) < 0.5 * least_sharp_good


def test_logical_kinds_are_opt_in_and_leave_the_default_set_unchanged(dataset: Path, tmp_path: Path) -> None:
    logical = generate_boards(tmp_path / "pcb", seed=0, logical=True, **COUNTS)
    assert _names(logical / "test") == sorted(["good", *DEFECT_KINDS, *LOGICAL_DEFECT_KINDS])
    for rel in (p.relative_to(dataset) for p in dataset.rglob("*.png")):
        assert (dataset / rel).read_bytes() == (logical / rel).read_bytes(), rel
    for defect in LOGICAL_DEFECT_KINDS:
        for i in range(COUNTS["n_per_defect"]):
            mask = cv2.imread(str(logical / "ground_truth" / defect / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
            # a part or two: more than a speck, far less than the board
            assert 30 < np.count_nonzero(mask) < 0.05 * mask.size, (defect, i)


def test_logical_defects_change_the_board_where_the_mask_says(tmp_path: Path) -> None:
    """The same stream with and without the defect: only the masked place differs (a mirrored part
    only at its pin-1 mark or polarity stripe, a few percent of its outline)."""
    from edge_anomaly.data import synthetic

    art = synthetic._BoardArt.build((320, 256))
    for defect in LOGICAL_DEFECT_KINDS:
        good, _ = synthetic._render(art, np.random.default_rng(5), None)
        bad, mask = synthetic._render(art, np.random.default_rng(5), defect)
        diff = np.abs(bad.astype(np.float32) - good).max(axis=2)
        near = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
        assert (diff[mask > 0] > 40).mean() > 0.02, defect
        assert diff[~near].mean() < 0.01, defect
