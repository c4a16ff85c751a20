"""The student-teacher template: its losses, its checks, and a short training run end to end.

The run trains for a few dozen steps on small generated boards at a non-square input size
(the size issue 10 derives from the data's aspect ratio), then evaluates, saves, reloads,
exports to ONNX with the parity check and predicts through the runtime Detector.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains a student: not in -m "not slow"

torch = pytest.importorskip("torch")

from edge_anomaly.templates.student_teacher import (  # noqa: E402
    StudentTeacherParams,
    StudentTeacherScorer,
    hard_feature_loss,
    penalty_images,
    shifted_copies,
    stage_weights,
)

SHORT_RUN = ["iterations=80", "eval_every=20", "patience=10", "input_size=[64, 96]", "batch_size=4"]


def test_hard_feature_loss_is_the_mean_of_the_worst_share():
    distance = torch.arange(1000, dtype=torch.float32).reshape(10, 10, 10)
    assert float(hard_feature_loss(distance, 0.99)) == pytest.approx(np.mean(np.arange(990, 1000)))
    assert float(hard_feature_loss(distance, 0.0)) == pytest.approx(499.5)


def test_hyperparameters_are_checked_where_declared():
    with pytest.raises(ValueError, match="eval_every"):
        StudentTeacherParams(iterations=10, eval_every=20)
    with pytest.raises(ValueError, match="hard_quantile"):
        StudentTeacherParams(hard_quantile=1.0)
    with pytest.raises(ValueError, match="global_smoothing=2 must be odd"):
        StudentTeacherParams(global_smoothing=2)
    params = StudentTeacherParams(layers=["stage4"], input_size=(64, 96))
    with pytest.raises(ValueError, match="stride 8"):
        StudentTeacherScorer(params, [(80, 4, 6)])


def test_the_graph_follows_a_non_square_input():
    params = StudentTeacherParams(input_size=(64, 128))
    scorer = StudentTeacherScorer(params, [(40, 8, 16), (112, 4, 8)])
    combined, score = scorer([torch.rand(2, 40, 8, 16), torch.rand(2, 112, 4, 8)], torch.rand(2, 3, 64, 128))
    assert combined.shape == (2, 1, 8, 16) and score.shape == (2,)
    assert torch.equal(score, combined.flatten(1).max(dim=1).values)


def test_the_global_map_is_averaged_over_three_cells_and_the_local_map_is_not():
    """Single-cell spikes of the global map are noise; the local map keeps single-cell detail."""
    pixels, teacher = torch.rand(1, 3, 64, 64), torch.rand(1, 40, 8, 8)
    maps = []
    for smoothing in (1, 3):  # the same seed, so the same weights for both
        params = StudentTeacherParams(input_size=(64, 64), global_smoothing=smoothing)
        with torch.no_grad():
            maps.append(StudentTeacherScorer(params, [(40, 8, 8)]).maps(teacher, pixels))
    (local, raw_global), (local_3, global_3) = maps
    assert torch.equal(local, local_3)
    assert float(global_3[0, 0, 4, 4]) == pytest.approx(float(raw_global[0, 0, 3:6, 3:6].mean()), rel=1e-5)
    assert float(global_3[0, 0, 0, 0]) == pytest.approx(float(raw_global[0, 0, :2, :2].mean()), rel=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_the_global_map_counts_at_its_weight(weight):
    """Each map normalised by its own held-out quantiles (90% -> 0, 99.5% -> 0.1), the global one weighted."""
    pixels, teacher = torch.rand(1, 3, 64, 64), torch.rand(1, 40, 8, 8)
    scorer = StudentTeacherScorer(StudentTeacherParams(input_size=(64, 64), global_weight=weight), [(40, 8, 8)])
    scorer.map_quantiles = torch.tensor([0.1, 0.3, 0.2, 0.6])
    with torch.no_grad():
        local, global_ = scorer.maps(teacher, pixels)
        combined, score = scorer([teacher], pixels)
    expected = 0.1 * ((local - 0.1) / 0.2 + weight * (global_ - 0.2) / 0.4)
    torch.testing.assert_close(combined, expected)
    assert float(score[0]) == pytest.approx(float(expected.max()))


def test_each_teacher_stage_has_the_same_share_of_the_maps():
    """Unit squared differences on every channel, divided by the weights squared and averaged over
    channels as the maps are: stage3's 40 channels count as much as stage5's 112."""
    weights = stage_weights([40, 112])
    share = 1.0 / weights.pow(2) / len(weights)
    assert float(share[:40].sum()) == pytest.approx(0.5) and float(share[40:].sum()) == pytest.approx(0.5)
    assert torch.equal(stage_weights([40]), torch.ones(40, dtype=torch.float64))


def test_penalty_images_are_unlike_the_training_images():
    rng = np.random.default_rng(0)
    images = np.full((3, 64, 96, 3), (40, 100, 30), np.uint8)
    penalty = penalty_images(images, 8, rng)
    assert penalty.shape == (8, 64, 96, 3) and penalty.dtype == np.uint8
    assert all(np.abs(p.astype(int) - images[0]).mean() > 20 for p in penalty)


def test_shifted_copies_move_each_image_by_less_than_one_feature_cell():
    """Each copy moves 1-7 px in x and in y: where a part falls inside its 8 px cell changes, its place does not."""
    images = np.zeros((2, 64, 96, 3), np.uint8)
    images[:, 30:34, 40:44] = 255
    copies = shifted_copies(images, 3, np.random.default_rng(0))
    assert copies.shape == (8, 64, 96, 3) and np.array_equal(copies[:2], images)
    moves = set()
    for copy in copies[2:]:
        ys, xs = np.nonzero(copy[..., 0] > 127)
        assert len(ys) == 16  # the square moved whole
        dy, dx = int(ys.min()) - 30, int(xs.min()) - 40
        assert 1 <= abs(dy) <= 7 and 1 <= abs(dx) <= 7
        moves.add((dy, dx))
    assert len(moves) > 1
    assert shifted_copies(images, 0, np.random.default_rng(0)).shape == images.shape


def _weights(scorer) -> dict:
    return {name: tensor.clone() for name, tensor in scorer.state_dict().items()}


def test_the_seed_sets_the_starting_weights_and_leaves_the_callers_generator_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, again, other = (_weights(StudentTeacherScorer(StudentTeacherParams(input_size=(64, 64), seed=seed),
                                                         [(40, 8, 8)])) for seed in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["student.net.1.weight"], other["student.net.1.weight"])


def test_two_fits_with_the_same_seed_train_the_same_networks(boards):
    """The seed decides the starting weights as well as the split, the copies and the batches."""
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    inputs = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    fitted = []
    for seed in (0, 0, 1):
        overrides = ["iterations=3", "eval_every=3", "input_size=[64, 96]", "batch_size=4", f"seed={seed}"]
        model = fit_model(boards, *load_params("student_teacher", overrides=overrides))
        fitted.append((_weights(model.graph.scorer), model.infer(inputs)[1]))
    (first, first_scores), (again, again_scores), (other, other_scores) = fitted
    assert all(torch.equal(first[name], again[name]) for name in first)
    np.testing.assert_array_equal(first_scores, again_scores)
    assert not torch.equal(first["student.net.1.weight"], other["student.net.1.weight"])
    assert not np.array_equal(first_scores, other_scores)


def _board_input(boards, size: tuple[int, int]) -> np.ndarray:
    from edge_anomaly.data.folders import load_inputs

    images, _ = load_inputs(sorted((boards / "test" / "good").glob("*.png"))[:1], size)
    return images[0].copy()


@pytest.fixture(scope="module")
def short_run(boards, tmp_path_factory):
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    template, params = load_params("student_teacher", overrides=SHORT_RUN)
    model = fit_model(boards, template, params)
    return model, model.save(tmp_path_factory.mktemp("models") / "boards-student-teacher")


def test_short_training_learns_and_round_trips(short_run, boards):
    from edge_anomaly.evaluation.evaluate import evaluate_model
    from edge_anomaly.model import TrainedModel

    model, folder = short_run
    history = model.graph.scorer.training_info["losses (step, training, validation)"]
    assert history[-1][1] < history[0][1]  # the training loss came down (validation on 3 boards is too noisy)
    saved = json.loads((folder / "model.json").read_text())["info"]["training"]
    assert [list(entry) for entry in history] == saved["losses (step, training, validation)"]
    low_local, high_local, low_global, high_global = model.graph.scorer.map_quantiles.tolist()
    assert high_local > low_local > 0 and high_global > low_global > 0
    metrics = evaluate_model(model, boards)
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and np.isfinite(metrics["pixel_auroc"])

    # even 80 steps teach it that a patch of noise is not a board
    good = model.infer(np.stack([_board_input(boards, model.input_size)]))[0][0]
    spoiled = _board_input(boards, model.input_size)
    spoiled[24:40, 40:56] = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    heat = model.infer(spoiled[None])[0][0]
    assert heat[24:40, 40:56].mean() > good[24:40, 40:56].mean()  # the patch's own place answers

    reloaded = TrainedModel.load(folder)
    inputs = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    for ours, theirs in zip(model.infer(inputs), reloaded.infer(inputs), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("added, old_value", [("student_depth", 2), ("global_smoothing", 1), ("shifted_copies", 0),
                                             ("global_weight", 1.0)])
def test_a_model_saved_before_a_parameter_existed_loads_as_trained(boards, tmp_path, added, old_value):
    from edge_anomaly.config import load_params
    from edge_anomaly.model import TrainedModel
    from edge_anomaly.training import fit_model

    overrides = ["iterations=2", "eval_every=1", "input_size=[64, 96]", "batch_size=4", f"{added}={old_value}"]
    model = fit_model(boards, *load_params("student_teacher", overrides=overrides))
    folder = model.save(tmp_path / "older")
    metadata = json.loads((folder / "model.json").read_text())
    del metadata["params"][added]  # as written before the parameter existed (old_value then)
    (folder / "model.json").write_text(json.dumps(metadata))
    reloaded = TrainedModel.load(folder)
    assert getattr(reloaded.params, added) == old_value
    inputs = np.random.default_rng(0).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    np.testing.assert_allclose(reloaded.infer(inputs)[1], model.infer(inputs)[1], rtol=1e-5)


def test_onnx_export_passes_parity_and_runs_in_the_detector(short_run, boards, tmp_path):
    pytest.importorskip("onnxruntime")
    from exporters.export import export_bundle
    from runtime.detector import Detector
    from runtime.image_io import read_image

    model, _ = short_run
    folder, _ = export_bundle(model, tmp_path / "st-onnx-fp32", fmt="onnx", precision="fp32")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["template"] == "student_teacher" and manifest["parity"]["passed"]
    frames = [read_image(path) for path in sorted((boards / "test" / "good").glob("*.png"))[:2]]
    frames.append(read_image(sorted((boards / "test" / "too_dark").glob("*.png"))[0]))
    results = Detector.load(folder).predict(frames)
    expected = model.predict(frames)
    for ours, theirs in zip(results, expected, strict=True):
        assert ours.score == pytest.approx(theirs.score, rel=1e-3, abs=1e-3)
        assert ours.heatmap.shape == theirs.heatmap.shape
    assert results[2].is_anomalous
