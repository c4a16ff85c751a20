"""The main job end to end on a fresh machine: data, automatic configuration, fit, evaluate, report.

Without ``--data`` it generates synthetic circuit boards (every defect kind the product
targets, with masks), so a new user sees the whole loop without downloading anything. It also
plays the capture-pipeline case: the good boards as an MPEG-4 video from the line camera, a
model fitted on still images judging those frames, and one fitted on frames of the same codec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_anomaly.autoconfig.search import fit_as_configured
from edge_anomaly.data.synthetic import generate_boards
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.data.video import write_video
from edge_anomaly.evaluation.evaluate import evaluate_model
from edge_anomaly.model import TrainedModel
from edge_anomaly.training import fit_model
from runtime.image_io import list_images, read_image

VIDEO_FPS = 10.0


def _video_of(folder: Path, path: Path) -> Path:
    return write_video(path, [read_image(p) for p in list_images(folder)], VIDEO_FPS)


def flagged_share(model: TrainedModel, video: Path) -> tuple[int, int]:
    """(frames flagged, frames) of a video of good parts."""
    frames = [frame for _, frame in TrainingSet.scan(video).frames()]
    results = [result for start in range(0, len(frames), 8) for result in model.predict(frames[start:start + 8])]
    return int(sum(r.label == "anomalous" for r in results)), len(results)


class Steps:
    """Says which step of the demo runs (it fits twice, and the progress bars alone look alike)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def say(self, text: str) -> None:
        self.done += 1
        print(f"\n[demo step {self.done}/{self.total}] {text}", flush=True)


def video_case(data: Path, model: TrainedModel, out_dir: Path, steps: Steps | None = None) -> dict:
    """The good boards as MPEG-4 videos: how many frames the image model and a video-fitted model flag."""
    videos = out_dir / "video"
    videos.mkdir(parents=True, exist_ok=True)
    train_video = _video_of(data / "train" / "good", videos / "line-train.mp4")
    test_video = _video_of(data / "test" / "good", videos / "line-test.mp4")
    steps = steps or Steps(2)
    steps.say(f"the capture-pipeline case: fitting the same {model.template} configuration again, on the frames "
              f"of {train_video} (the good boards as MPEG-4 video)")
    video_model = fit_model(train_video, model.template, model.params)
    video_model.save(out_dir / "model-video")
    steps.say(f"judging {test_video} (good boards on video) with the still-image model and the video model")
    image_flags, frames = flagged_share(model, test_video)
    video_flags, _ = flagged_share(video_model, test_video)
    return {"test_video": str(test_video), "frames": frames,
            "flagged_by_image_model": image_flags, "flagged_by_video_model": video_flags}


def run_demo(out_dir: str | Path, data: str | Path | None = None, template: str | None = None,
             overrides: list[str] | None = None) -> dict:
    """Fit and evaluate; returns the metrics (with the video case for generated data). Everything lands
    under ``out_dir``: ``data/`` (when generated), ``model/``, ``report/``, ``video/``, ``model-video/``."""
    out_dir = Path(out_dir)
    generated = data is None
    steps = Steps(5 if generated else 2)
    if generated:
        steps.say(f"generating circuit boards (good ones and every defect kind, with masks) in {out_dir / 'data'}")
    data = Path(generate_boards(out_dir / "data") if generated else data)
    training = TrainingSet.scan(data)
    what = ("automatic configuration (candidates tried on synthetic defects), then fitting the one chosen"
            if template in (None, "auto") else f"fitting {template}")
    steps.say(f"{what} on the still images of {training.folder}")
    model, _ = fit_as_configured(training, template, overrides=overrides,
                                 announce=lambda choice: print(choice.announcement()))
    template = model.template
    model.save(out_dir / "model")
    steps.say(f"evaluating the {template} model on {data / 'test'}; report in {out_dir / 'report'}")
    category = "generated circuit boards" if generated else data.resolve().name
    metrics = evaluate_model(model, data, out_dir / "report", title=f"{template} on {category}",
                             model_folder=out_dir / "model", category=category)
    if generated:
        metrics["video"] = video_case(data, model, out_dir, steps)
    return metrics


def video_summary(video: dict) -> str:
    """One line for the console: what each model makes of the good boards on video."""
    share = np.array([video["flagged_by_image_model"], video["flagged_by_video_model"]]) / max(video["frames"], 1)
    return (f"good boards on MPEG-4 video ({video['frames']} frames): the model fitted on still images flags "
            f"{video['flagged_by_image_model']} ({share[0]:.0%}); the one fitted on frames of the same codec flags "
            f"{video['flagged_by_video_model']} ({share[1]:.0%})")
