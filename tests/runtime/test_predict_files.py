"""predict over files: the frame count is known up front for still images, overlays keep their folder."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.predict_files import predict_files
from runtime.scoring import ScoreScale, Scoring


class FlatDetector:
    """Every frame normal (raw score 0, threshold 1): the runner's bookkeeping without an engine."""

    scoring = Scoring(local=ScoreScale(threshold=1.0, spread=1.0))
    capture_profile = None  # a model made before the capture was recorded: no source check

    def predict(self, frames):
        return [self.scoring.decide(0.0, np.zeros((8, 8), np.float32), frame, frame.shape[:2]) for frame in frames]


def test_same_named_images_from_two_folders_keep_their_folder_and_the_count_is_known(tmp_path):
    for folder in ("good", "scratch"):
        (tmp_path / folder).mkdir()
        for name in ("000.png", "001.png"):
            cv2.imwrite(str(tmp_path / folder / name), np.full((16, 20, 3), 90, np.uint8))
    totals: list = []
    rows: list = []
    run = predict_files(FlatDetector(), [str(tmp_path / "good"), str(tmp_path / "scratch")], tmp_path / "out",
                        on_frame=rows.append, on_start=totals.append)
    assert totals == [4] and run.frames == 4
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "good_000.png", "good_001.png", "scratch_000.png", "scratch_001.png"]
    assert [row["overlay"].rsplit("/", 1)[-1] for row in rows] == [
        "good_000.png", "good_001.png", "scratch_000.png", "scratch_001.png"]

    totals.clear()
    predict_files(FlatDetector(), [str(tmp_path / "good")], max_frames=1, on_start=totals.append)
    assert totals == [1]
