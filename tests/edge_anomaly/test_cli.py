"""The edge-anomaly command end to end on generated boards: fit, evaluate, predict, templates."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from edge_anomaly.cli import main  # noqa: E402
from runtime.image_io import list_images  # noqa: E402


@pytest.mark.slow
def test_evaluate_writes_metrics_report_and_prints_table(board_model, boards, tmp_path, capsys):
    folder, _ = board_model
    report = tmp_path / "report"
    assert main(["evaluate", str(folder), "--data", str(boards), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert "image AUROC" in out and "pixel AUPRO" in out
    assert out.index("false-alarm rate") < out.index("miss rate") < out.index("image AUROC")  # the line's figures first
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["image_auroc"] >= 0.95
    assert metrics["n_pixel_images"] == metrics["n_images"] - 4 * 3  # lighting and blur have no masks
    assert (report / "roc.png").stat().st_size > 0 and (report / "metrics.md").is_file()
    assert list((report / "worst").glob("defect_*.png")) and (report / "report.html").is_file()
    assert 0.0 <= metrics["false_alarm_rate"] <= 1.0 and 0.0 <= metrics["miss_rate"] <= 1.0
    # which model and which part: identity a quality engineer can check against the model folder
    import hashlib

    model = json.loads((folder / "model.json").read_text())
    identity = metrics["model"]
    assert identity["hash"] == hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    assert identity["training_images"] == model["info"]["training_set"]["n_images"]
    assert identity["raw_threshold"] == model["scoring"]["local"]["threshold"]
    assert identity["input_size"] == model["input"]["size"] and identity["created"] == model["info"]["created"]
    assert metrics["category"] == boards.resolve().name
    assert f"<h1>{identity['template']} on {boards.resolve().name}</h1>" in (report / "report.html").read_text()


def test_predict_folder_skips_corrupt_file_and_names_it(board_model, boards, tmp_path, caplog):
    folder, _ = board_model
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in list_images(boards / "test" / "scratch")[:2]:
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "zz_corrupt.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(folder), str(inputs), "--out", str(out)]) == 0
    assert "zz_corrupt.png" in caplog.text
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["label"] for row in rows] == ["anomalous", "anomalous"]
    assert all(cv2.imread(row["overlay"]) is not None for row in rows)


@pytest.mark.slow
def test_predict_video_gives_one_line_per_frame_and_an_overlay_video(board_model, boards, tmp_path):
    folder, _ = board_model
    frames = [cv2.imread(str(p)) for p in list_images(boards / "test" / "good")[:3]]
    frames += [cv2.imread(str(p)) for p in list_images(boards / "test" / "too_dark")[:2]]
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 256))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "video-pred"
    assert main(["predict", str(folder), str(video), "--out", str(out), "--batch", "2"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["kind"] for row in rows[3:]] == ["lighting", "lighting"]
    capture = cv2.VideoCapture(str(out / "line_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


@pytest.mark.slow
def test_fit_from_cli_with_config_and_set(boards, tmp_path, capsys):
    config = tmp_path / "padim.yaml"
    config.write_text("template: padim\nn_features: 16\n")
    out = tmp_path / "padim-model"
    code = main(["fit", "--data", str(boards), "--config", str(config), "--set", "input_size=[128, 160]",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["template"] == "padim" and meta["params"]["n_features"] == 16
    assert meta["params"]["input_size"] == [128, 160]


def test_bad_input_fails_with_a_message_naming_it(boards, tmp_path, capsys):
    assert main(["fit", "--data", str(boards), "--set", "coreset_ratio=7", "--out", str(tmp_path / "m")]) == 2
    assert "coreset_ratio" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.png"]) == 2
    assert "model folder" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "given"), [(["--center-crop", "1.5"], "1.5"), (["--set", "center_crop=true"], "True"),
                                             (["--set", "center_crop=0"], "0")])
def test_a_bad_center_crop_fails_at_fit_with_the_rule_the_edge_box_applies(boards, tmp_path, capsys, flag, given):
    assert main(["fit", "--data", str(boards), *flag, "--out", str(tmp_path / "m")]) == 2
    assert (f"center_crop: Value error, center_crop must be a fraction in (0, 1] of the shorter side, got {given}"
            in capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_templates_lists_hyperparameters(capsys):
    assert main(["templates"]) == 0
    out = capsys.readouterr().out
    assert "patchcore:" in out and "padim:" in out and "coreset_ratio" in out and "n_features" in out


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run([sys.executable, "-m", "edge_anomaly", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("edge-anomaly ")


@pytest.mark.slow
def test_fit_with_defect_examples_uses_f1_threshold(boards, tmp_path):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    _, params = load_params("padim", overrides=["n_features=16", "global_checks=false", "input_size=[256, 256]"])
    model = fit_model(boards, "padim", params, defects=boards / "test" / "missing_component")
    assert model.info["threshold_mode"] == "f1"
    inputs = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (256, 256))
                       for p in list_images(boards / "test" / "missing_component")])
    scores = model.infer(inputs)[1]
    threshold = model.scoring.local.threshold
    # F1-optimal: above the typical (k-fold) normal score, and catching the clearer defects
    assert model.info["normal_scores"]["median"] < threshold <= scores.max()


def test_device_always_names_a_profile_and_the_engine_device_has_its_own_flag(capsys):
    assert main(["predict", "bundle", "x.png", "--device", "CPU"]) == 2
    assert "--engine-device" in capsys.readouterr().err
    assert main(["bench", "bundle", "--device", "CPU"]) == 2
    err = capsys.readouterr().err
    assert "--device 'CPU': not a device profile" in err and "--engine-device CPU" in err


def test_flag_names_say_what_they_mean_and_the_old_names_still_work(capsys):
    from edge_anomaly.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["evaluate", "m", "--data", "d", "--report", "r"]).out == "r"  # the older name
    assert parser.parse_args(["evaluate", "m", "--data", "d", "--category", "bottle"]).category == "bottle"
    assert parser.parse_args(["fit", "--data", "d", "--out", "m", "--max-frames", "5"]).max_frames == 5
    assert parser.parse_args(["fit", "--data", "d", "--out", "m", "--max-frames-per-video", "5"]).max_frames == 5
    assert parser.parse_args(["update", "m", "--add", "a", "--in-place"]).in_place
    with pytest.raises(SystemExit):  # update no longer replaces the model unless told to
        parser.parse_args(["update", "m", "--add", "a"])
    assert "one of the arguments --out --in-place is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    assert "student_teacher" in capsys.readouterr().out
