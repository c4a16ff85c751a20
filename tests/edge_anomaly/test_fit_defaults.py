"""What `fit` chooses by itself: the input size from the images' aspect, the ROI that travels, video frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fits at the default sizes: not in -m "not slow"

pytest.importorskip("torch")

from edge_anomaly.data.training_set import TrainingSet, input_size_for  # noqa: E402
from edge_anomaly.data.video import write_video  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402


@pytest.mark.parametrize(("aspect", "budget", "expected"), [
    (1.0, 256 * 256, (256, 256)),
    (1.25, 256 * 256, (224, 288)),
    (4 / 3, 512 * 384, (384, 512)),
    (0.5, 256 * 256, (320, 160)),
    (1.0, 300 * 300, (288, 288)),
])
def test_input_size_keeps_the_aspect_within_the_pixel_budget(aspect, budget, expected):
    height, width = input_size_for(aspect, budget)
    assert (height, width) == expected
    assert height % 32 == 0 and width % 32 == 0 and height * width <= budget


def test_fit_chooses_the_size_and_the_roi_travels_to_model_bundle_and_detector(boards, tmp_path):
    from edge_anomaly.cli import main
    from edge_anomaly.model import TrainedModel
    from runtime.detector import Detector

    out = tmp_path / "roi-model"
    # boards are 320 x 256; the ROI keeps the board's left 192 x 160 part
    assert main(["fit", "--data", str(boards), "--template", "padim", "--set", "n_features=16",
                 "--roi", "16,32,192,160", "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["params"]["roi"] == [16, 32, 192, 160] and meta["input"]["roi"] == [16, 32, 192, 160]
    assert meta["input"]["size"] == [224, 256]  # 192:160 = 6:5: the closest shape on the grid within 256 x 256
    assert meta["info"]["calibration"]["method"] == "tail-fit"
    assert meta["info"]["training_set"]["folder"] == str((boards / "train" / "good").resolve())

    model = TrainedModel.load(out)
    frame = read_image(list_images(boards / "test" / "good")[0])
    result = model.predict([frame])[0]
    assert result.heatmap.shape == frame.shape[:2]
    outside = np.ones(frame.shape[:2], bool)
    outside[32:192, 16:208] = False
    assert np.all(result.heatmap[outside] == 0)  # nothing outside the ROI is judged

    pytest.importorskip("onnxruntime")
    from exporters.export import export_bundle

    bundle, _ = export_bundle(model, tmp_path / "roi-bundle")
    detector = Detector.load(bundle)
    assert detector.roi == (16, 32, 192, 160)
    edge = detector.predict(frame)
    assert edge.label == result.label and edge.score == pytest.approx(result.score, rel=1e-3)
    # the same frame shifted right: the part leaves the ROI, which the detector still inspects
    assert np.all(edge.heatmap[outside] == 0)


def test_fit_on_video_frames(boards, tmp_path):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    frames = [read_image(p) for p in list_images(boards / "train" / "good")]
    video = write_video(tmp_path / "line.mp4", frames, 10.0)
    training = TrainingSet.scan(video, every_nth=2)
    assert training.has_video and len(training.frames()) == len(frames) // 2 + len(frames) % 2
    _, params = load_params("padim", overrides=["n_features=16"])
    model = fit_model(video, "padim", params, every_nth=2)
    assert model.info["training_set"]["video"] == {"every_nth": 2, "max_frames": None}
    assert model.info["training_set"]["n_images"] == len(training.frames())
    # frames of the same codec read as normal
    capture = cv2.VideoCapture(str(video))
    ok, bgr = capture.read()
    capture.release()
    assert ok and model.predict([bgr[..., ::-1].copy()])[0].label == "normal"


def test_demo_video_case_fits_on_codec_frames_and_counts_flags(board_model, boards, tmp_path):
    from edge_anomaly.demo import video_case, video_summary

    _, model = board_model
    video = video_case(boards, model, tmp_path)
    assert video["frames"] == len(list_images(boards / "test" / "good"))
    assert (tmp_path / "video" / "line-test.mp4").is_file() and (tmp_path / "model-video" / "model.json").is_file()
    # a model fitted on frames of the same codec passes the good frames
    assert video["flagged_by_video_model"] <= 1
    assert f"({video['frames']} frames)" in video_summary(video)
