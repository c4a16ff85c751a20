"""Cameras sharing one engine: frames batched into one call score as they do alone, on real engines."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from runtime.batching import BatchingBackend, share_engine, shared_performance
from runtime.detector import Detector


def _together(backend: BatchingBackend, inputs: list[np.ndarray]) -> list:
    """Each input from its own thread (a camera), all released at once after one warm-up call each (so every
    thread counts as an active camera); returns each thread's (heatmaps, scores) or the exception it got.

    A warm-up round may wait ``max_wait_ms`` for a camera already past its warm-up: keep it short."""
    answers: list = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def camera(index: int) -> None:
        start.wait()
        backend.infer(inputs[0])  # the warm-up: this camera is now known as active
        start.wait()
        try:
            answers[index] = backend.infer(inputs[index])
        except Exception as exc:  # the caller's own error, handed back for the assertion
            answers[index] = exc

    threads = [threading.Thread(target=camera, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return answers


def _bundle(fmt: str, batch: int | None, board_exports, board_model, tmp_path):
    """A bundle of the board model: ONNX, OpenVINO (dynamic or fixed batch), or TensorRT where a GPU runs it."""
    if fmt != "tensorrt":
        return board_exports(fmt, batch)
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU)")
    pytest.importorskip("cuda", reason="cuda-python is not installed")
    from exporters.export import export_bundle

    return export_bundle(board_model[1], tmp_path / "trt", fmt="tensorrt")[0]  # FP32: batch-size exact


@pytest.mark.parametrize(("fmt", "batch"), [("onnx", None), ("openvino", None), ("openvino", 2),
                                            pytest.param("tensorrt", None, marks=pytest.mark.gpu)])
def test_frames_batched_from_four_cameras_score_as_they_do_alone(board_exports, board_model, board_frames, tmp_path,
                                                                 fmt, batch):
    detector = Detector.load(_bundle(fmt, batch, board_exports, board_model, tmp_path))
    assert detector.backend.name == {"onnx": "onnxruntime"}.get(fmt, fmt)
    inputs = [detector.prepare(frame).input[None] for frame in board_frames[:4]]
    alone = [detector.infer(x) for x in inputs]
    batcher = BatchingBackend(detector.backend, max_wait_ms=800, active_s=600)
    answers = _together(batcher, inputs)
    # 4 warm-up rounds at most, then the four frames in one round (the fixed batch of 2: in two engine calls)
    assert batcher.images == 8 and batcher.rounds < 8
    for (heatmap, score), (expected_heatmap, expected_score) in zip(answers, alone, strict=True):
        np.testing.assert_allclose(score, expected_score, rtol=1e-5)
        np.testing.assert_allclose(heatmap, expected_heatmap, rtol=1e-5, atol=1e-6)


def test_a_shared_detector_gives_each_camera_its_own_verdict(board_exports, board_frames):
    detector = Detector.load(board_exports("openvino"))
    expected = [r.score for r in detector.predict(board_frames)]
    assert not share_engine(detector, 3, "off", 20)
    assert share_engine(detector, 3, "auto", 20)
    assert detector.backend.name == "openvino" and isinstance(detector.backend, BatchingBackend)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda index: (index, detector.predict(board_frames[index]).score),
                                [i % len(board_frames) for i in range(18)]))
    for index, score in answers:
        assert score == pytest.approx(expected[index], rel=1e-5), index
    assert detector.backend.rounds < 18  # some frames did share a call


def test_a_lone_camera_never_waits_and_one_camera_keeps_its_engine(board_exports, board_frames):
    detector = Detector.load(board_exports("onnx"))
    engine = detector.backend
    assert not share_engine(detector, 1, "auto", 4) and detector.backend is engine
    batcher = BatchingBackend(engine, max_wait_ms=30_000)
    x = detector.prepare(board_frames[0]).input[None]
    started = time.monotonic()
    for _ in range(3):
        batcher.infer(x)
    assert time.monotonic() - started < 15  # one wait would be 30 s
    assert (batcher.rounds, batcher.images) == (3, 3)


def test_a_bad_frame_fails_alone_and_a_failed_call_fails_its_whole_round(board_exports, board_frames):
    detector = Detector.load(board_exports("onnx"))
    good = detector.prepare(board_frames[0]).input[None]
    expected = detector.infer(good)[1]
    batcher = BatchingBackend(detector.backend, max_wait_ms=800, active_s=600)
    # another shape: a round of its own, whose engine call ONNX Runtime refuses; the others are answered
    answers = _together(batcher, [good, good[:, :-8], good])
    assert isinstance(answers[1], Exception) and "images" in str(answers[1])
    for answer in (answers[0], answers[2]):
        np.testing.assert_allclose(answer[1], expected, rtol=1e-5)
    # float32 pixels in the same round as uint8 ones: the stacked batch is float, ONNX Runtime refuses the call
    answers = _together(batcher, [good, good.astype(np.float32)])
    assert all(isinstance(answer, Exception) for answer in answers)
    assert batcher.infer(good)[1] == pytest.approx(expected, rel=1e-5)  # the next round runs afresh


def test_close_ends_a_wait_at_once_and_leaves_no_thread(board_exports, board_frames):
    detector = Detector.load(board_exports("onnx"))
    x = detector.prepare(board_frames[0]).input[None]
    expected = detector.infer(x)[1]
    threads_before = threading.active_count()
    batcher = BatchingBackend(detector.backend, max_wait_ms=60_000, active_s=600)
    silent, release = threading.Event(), threading.Event()

    def silent_camera() -> None:  # a second camera, seen once, then silent (alive: its thread id is not reused)
        batcher.infer(x)
        silent.set()
        release.wait(60)

    other = threading.Thread(target=silent_camera)
    other.start()
    assert silent.wait(60)
    answer: list = []
    waiting = threading.Thread(target=lambda: answer.append(batcher.infer(x)))
    started = time.monotonic()
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive()  # waiting for the silent camera's frame
    batcher.close()
    waiting.join(timeout=20)
    assert not waiting.is_alive() and time.monotonic() - started < 20
    assert answer[0][1] == pytest.approx(expected, rel=1e-5)
    assert batcher.infer(x)[1] == pytest.approx(expected, rel=1e-5)  # after close: straight to the engine
    release.set()
    other.join(timeout=20)
    assert threading.active_count() == threads_before


def test_the_batching_switch_names_its_modes():
    """Shared engines run OpenVINO's throughput streams under auto; a lone camera keeps the latency hint."""
    assert shared_performance("auto", 2) == shared_performance("auto", 4) == "throughput"
    assert shared_performance("auto", 1) == shared_performance("off", 4) == "latency"
    with pytest.raises(ValueError, match="batching 'sometimes' is not one of auto, off"):
        shared_performance("sometimes", 2)
    with pytest.raises(ValueError, match="max_wait_ms -1"):
        BatchingBackend(object(), max_wait_ms=-1)
