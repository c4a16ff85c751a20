"""The camera's capture measured at its own resolution, and a source that differs from training named once."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.capture_check import FRAMES_COMPARED, CaptureCheck
from runtime.global_stats import CAPTURE_STATS, GlobalStats, capture_statistics
from runtime.manifest import CaptureSection
from runtime.predict_files import predict_files
from runtime.scoring import ScoreScale, Scoring


def _scene(seed: int = 0, size: int = 256) -> np.ndarray:
    """A smooth, textured RGB scene with next to no noise of its own."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), (0, 0), 3)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def test_noise_is_measured_in_grey_levels_and_blocks_grow_as_jpeg_quality_falls():
    scene = _scene()
    rng = np.random.default_rng(1)
    for sigma in (2.0, 5.0):
        noisy = np.clip(scene + rng.normal(0, sigma, scene.shape), 0, 255).astype(np.uint8)
        assert capture_statistics(noisy)[0] == pytest.approx(sigma, rel=0.2)
    assert capture_statistics(scene)[0] < 1.0
    blocks = [capture_statistics(_jpeg(scene, quality))[1] for quality in (95, 75, 40)]
    assert capture_statistics(scene)[1] == pytest.approx(1.0, abs=0.1)
    assert blocks[0] < blocks[1] < blocks[2] and blocks[2] > 1.3


def test_the_window_stays_on_the_jpeg_grid_of_the_frame_not_of_the_region():
    frame = _jpeg(np.tile(_scene(size=512), (2, 2, 1)), 50)
    on_grid = capture_statistics(frame, (13, 21, 700, 600))[1]
    # the same pixels as a frame of their own: the 8-px grid is off by (13, 21) and the blocks go unseen
    off_grid = capture_statistics(np.ascontiguousarray(frame[21:621, 13:713]))[1]
    assert on_grid > 1.3 and off_grid < 1.1


def _scoring() -> Scoring:
    """Noise and compression checks from a few clean stills of the scene."""
    stills = np.stack([capture_statistics(_scene(seed)) for seed in range(6)])
    return Scoring(local=ScoreScale(threshold=1.0, spread=1.0), capture_stats=GlobalStats.fit(stills, CAPTURE_STATS),
                   noise=ScoreScale(threshold=2.0, spread=1.0), compression=ScoreScale(threshold=3.0, spread=1.0))


PROFILE = CaptureSection(source="stills", suffixes=[".png"], frame_hw=(256, 256), noise=0.3, blockiness=1.0)


def test_a_video_source_for_a_model_fitted_on_stills_is_named_once_with_the_fix():
    check = CaptureCheck(PROFILE, _scoring())
    frame = capture_statistics(_scene())
    said = [check.observe("line.mp4", True, (256, 256), frame) for _ in range(3 * FRAMES_COMPARED)]
    warnings = [w for w in said if w]
    assert len(warnings) == 1 and said.index(warnings[0]) == FRAMES_COMPARED - 1
    assert "fitted on still images (.png)" in warnings[0] and "edge-anomaly fit --data line.mp4" in warnings[0]
    assert check.warnings == {"line.mp4": warnings[0]}


def test_stills_like_the_training_ones_pass_and_compressed_or_larger_frames_are_named():
    check = CaptureCheck(PROFILE, _scoring())
    assert not any(check.observe("good/", False, (256, 256), capture_statistics(_scene(s))) for s in range(9))
    compressed = [check.observe("cam.jpg", False, (256, 256), capture_statistics(_jpeg(_scene(s), 30)))
                  for s in range(FRAMES_COMPARED)]
    assert "more compressed than the training frames" in compressed[-1]
    large = [check.observe("hd", False, (1080, 1920), None)]
    assert "1920x1080" in large[0] and "another scale" in large[0]


def test_without_a_recorded_capture_nothing_is_checked():
    check = CaptureCheck(None, _scoring())
    assert check.observe("line.mp4", True, (1080, 1920), None) is None and check.warnings == {}


class StillsModel:
    """Every frame normal, with the noise and compression checks and a model fitted on stills."""

    scoring = _scoring()
    capture_profile = PROFILE

    def predict(self, frames):
        return [self.scoring.decide(0.0, np.zeros((8, 8), np.float32), f, f.shape[:2], capture=capture_statistics(f))
                for f in frames]


def test_predict_warns_when_a_model_fitted_on_stills_reads_a_video(tmp_path):
    path = tmp_path / "line.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    for seed in range(8):
        writer.write(_scene(seed))
    writer.release()
    run = predict_files(StillsModel(), [str(path)])
    assert run.frames == 8 and list(run.capture_warnings) == [str(path)]
    assert "this source is video" in run.capture_warnings[str(path)]
    stills = tmp_path / "stills"
    stills.mkdir()
    for seed in range(6):
        cv2.imwrite(str(stills / f"{seed}.png"), _scene(seed))
    assert predict_files(StillsModel(), [str(stills)]).capture_warnings == {}
