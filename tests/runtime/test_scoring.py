"""Normalisation, threshold calibration, lighting/blur statistics and the verdict."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.global_stats import STAT_NAMES, GlobalStats, image_statistics
from runtime.scoring import ScoreScale, Scoring, compact_hot_region


def test_scale_puts_threshold_at_half_and_is_monotonic():
    scale = ScoreScale(threshold=10.0, spread=2.0)
    assert scale.normalize(10.0) == pytest.approx(0.5)
    assert scale.normalize(12.0) == pytest.approx(0.9)
    assert scale.normalize(8.0) == pytest.approx(0.1)
    values = scale.normalize(np.linspace(-1e6, 1e6, 101))
    assert np.all(np.diff(values) >= 0) and np.isfinite(values).all()
    assert ScoreScale.model_validate(scale.model_dump(mode="json")) == scale
    with pytest.raises(ValueError, match="spread"):
        ScoreScale(threshold=1.0, spread=0.0)


def test_quantile_and_f1_calibration():
    pytest.importorskip("sklearn")
    from edge_anomaly.calibration import f1_scale, quantile_scale

    normal = np.arange(1.0, 101.0)  # median 50.5, 0.99-quantile 99.01
    scale = quantile_scale(normal, quantile=0.99, margin=0.5)
    assert scale.threshold == pytest.approx(99.01 + 0.5 * (99.01 - 50.5))
    assert scale.normalize(50.5) == pytest.approx(0.1)

    f1, calibration = f1_scale(np.array([1.0, 2.0, 3.0]), np.array([7.0, 8.0]))
    assert f1.threshold == pytest.approx(5.0)  # halfway between the last normal and first defect
    assert calibration.method == "f1" and calibration.estimated_false_alarm_rate == 0.0


def _board_like(rng) -> np.ndarray:
    image = np.full((128, 128, 3), 120, np.uint8)
    for _ in range(40):
        x, y = rng.integers(0, 120, 2)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + 6, int(y) + 4), (30, 200, 60), -1)
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def test_global_statistics_separate_lighting_and_blur():
    rng = np.random.default_rng(0)
    normals = [_board_like(np.random.default_rng(1)) for _ in range(20)]
    normals = [np.clip(n * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8) for n in normals]
    reference = GlobalStats.fit(np.stack([image_statistics(n) for n in normals]))
    base = normals[0]
    dark = (base * 0.4).astype(np.uint8)
    blurred = cv2.GaussianBlur(base, (0, 0), 3)
    shadow = base.copy()
    shadow[:, :60] = (shadow[:, :60] * 0.5).astype(np.uint8)

    light_normal, blur_normal = reference.deviation_scores(image_statistics(base))
    light_dark, blur_dark = reference.deviation_scores(image_statistics(dark))
    light_shadow, _ = reference.deviation_scores(image_statistics(shadow))
    _, blur_blurred = reference.deviation_scores(image_statistics(blurred))
    assert light_dark[0] > 10 * max(light_normal[0], 1.0)
    assert light_shadow[0] > 10 * max(light_normal[0], 1.0)
    assert blur_blurred[0] > 10 * max(blur_normal[0], 1.0)
    assert blur_dark[0] < 3  # a gain change is lighting, not blur
    assert GlobalStats.model_validate(reference.model_dump(mode="json")).mean.shape == (len(STAT_NAMES),)


def test_decide_reports_label_confidence_kind_and_frame_size_heatmap():
    rng = np.random.default_rng(0)
    normals = [_board_like(rng) for _ in range(10)]
    reference = GlobalStats.fit(np.stack([image_statistics(n) for n in normals]))
    scoring = Scoring(local=ScoreScale(threshold=10.0, spread=2.0), global_stats=reference,
                      lighting=ScoreScale(threshold=6.0, spread=2.0), blur=ScoreScale(threshold=6.0, spread=2.0))
    heat = np.full((128, 128), 8.0, np.float32)

    normal = scoring.decide(8.0, heat, normals[0], (480, 640))
    assert (normal.label, normal.kind) == ("normal", None)
    assert normal.confidence == pytest.approx(0.9)
    assert normal.heatmap.shape == (480, 640)
    assert normal.normalized_score == pytest.approx(0.1)  # silent global checks leave it alone

    local = scoring.decide(14.0, heat, normals[0], (128, 128))
    assert (local.label, local.kind) == ("anomalous", "local")
    assert local.concept == {"label": "anomalous", "confidence": local.normalized_score}

    dark = scoring.decide(8.0, heat, (normals[0] * 0.3).astype(np.uint8), (128, 128))
    assert (dark.label, dark.kind) == ("anomalous", "lighting")
    assert Scoring.model_validate(scoring.model_dump(mode="json")) == scoring


def _scoring_for(normals: list[np.ndarray]) -> Scoring:
    reference = GlobalStats.fit(np.stack([image_statistics(n) for n in normals]))
    return Scoring(local=ScoreScale(threshold=10.0, spread=2.0), global_stats=reference,
                   lighting=ScoreScale(threshold=6.0, spread=2.0), blur=ScoreScale(threshold=6.0, spread=2.0))


def test_compact_hot_region_is_a_few_blobs_not_the_whole_frame_nor_speckle():
    heat = np.zeros((128, 128), np.float32)
    heat[20:50, 30:60] = 0.9
    region = compact_hot_region(heat)
    assert region is not None and region[35, 45] and region[18, 45]  # the blob, widened by a margin
    assert not region[100, 100]
    assert compact_hot_region(np.zeros((128, 128))) is None  # nothing hot
    assert compact_hot_region(np.full((128, 128), 0.7)) is None  # everything hot: the whole frame
    speckle = np.zeros((128, 128), np.float32)
    speckle[::8, ::8] = 0.9  # 256 separate hot pixels: no few components hold the hot area
    assert compact_hot_region(speckle) is None


def test_excluded_region_blanks_its_shading_cells_and_keeps_whole_frame_figures():
    image = _board_like(np.random.default_rng(2))
    exclude = np.zeros(image.shape[:2], bool)
    exclude[:40, :40] = True  # all of cell 00, part of its neighbours
    full, partial = image_statistics(image), image_statistics(image, exclude)
    names = list(STAT_NAMES)
    assert np.isnan(partial[names.index("shading_00")])
    assert not np.isnan(partial[names.index("shading_33")])
    assert partial[names.index("brightness")] == full[names.index("brightness")]
    assert np.array_equal(image_statistics(image, np.zeros_like(exclude)), full)


def test_a_local_defect_that_moves_the_global_statistics_stays_local():
    normals = [_board_like(np.random.default_rng(seed)) for seed in range(12)]
    scoring = _scoring_for(normals)
    defect = normals[0].copy()
    defect[0:32, 32:64] = 60  # a flat grey patch where parts and print should be (a missing label)
    heat = np.full((128, 128), 8.0, np.float32)
    heat[0:32, 32:64] = 14.0  # the model sees it as one compact hot region
    light, blur = scoring.global_stats.deviation_scores(image_statistics(defect))
    # Both global checks fire on it (darker cell, sharpness lost): alone they would say blur.
    assert scoring.lighting.normalize(light[0]) >= 0.5 and scoring.blur.normalize(blur[0]) >= 0.5
    result = scoring.decide(14.0, heat, defect, (128, 128))
    assert (result.label, result.kind) == ("anomalous", "local")
    assert result.kind_scores["blur"] >= 0.5  # the scores still say what moved

    # The same frame without a hot region in the heatmap: nothing local explains it.
    assert scoring.decide(8.0, np.full((128, 128), 8.0, np.float32), defect, (128, 128)).kind == "blur"


def test_a_dark_or_blurred_frame_with_a_hot_spot_is_still_lighting_or_blur():
    normals = [_board_like(np.random.default_rng(seed)) for seed in range(12)]
    scoring = _scoring_for(normals)
    heat = np.full((128, 128), 8.0, np.float32)
    heat[60:70, 60:70] = 14.0  # one spot the darkness lit up
    dark = (normals[0] * 0.4).astype(np.uint8)
    assert scoring.decide(14.0, heat, dark, (128, 128)).kind == "lighting"
    blurred = cv2.GaussianBlur(normals[0], (0, 0), 3)
    assert scoring.decide(14.0, heat, blurred, (128, 128)).kind == "blur"
    everywhere = np.full((128, 128), 14.0, np.float32)  # the whole map hot: no local region
    assert scoring.decide(14.0, everywhere, blurred, (128, 128)).kind == "blur"


def test_noise_and_compression_beyond_the_tolerance_are_named_even_with_a_hot_spot():
    from runtime.global_stats import CAPTURE_STATS, capture_statistics

    normals = [_board_like(np.random.default_rng(seed)) for seed in range(12)]
    capture = np.stack([capture_statistics(n) for n in normals])
    scoring = Scoring(**{**_scoring_for(normals).__dict__,
                         "capture_stats": GlobalStats.fit(capture, CAPTURE_STATS),
                         "noise": ScoreScale(threshold=4.0, spread=2.0),
                         "compression": ScoreScale(threshold=4.0, spread=2.0)})
    heat = np.full((128, 128), 8.0, np.float32)
    heat[60:70, 60:70] = 14.0
    noisy = np.clip(normals[0] + np.random.default_rng(5).normal(0, 12, normals[0].shape), 0, 255).astype(np.uint8)
    result = scoring.decide(14.0, heat, noisy, (128, 128), capture=capture_statistics(noisy))
    assert (result.label, result.kind) == ("anomalous", "noise") and result.kind_scores["noise"] > 0.5
    blocky = cv2.imdecode(cv2.imencode(".jpg", normals[0], [cv2.IMWRITE_JPEG_QUALITY, 10])[1], cv2.IMREAD_COLOR)
    result = scoring.decide(8.0, np.full((128, 128), 8.0, np.float32), blocky, (128, 128),
                            capture=capture_statistics(blocky))
    assert (result.label, result.kind) == ("anomalous", "compression")
    clean = scoring.decide(8.0, np.full((128, 128), 8.0, np.float32), normals[1], (128, 128),
                           capture=capture_statistics(normals[1]))
    assert clean.label == "normal" and clean.kind_scores["noise"] < 0.5
    assert Scoring.model_validate(scoring.model_dump(mode="json")) == scoring
