"""The pipelined runner: same results as one frame at a time, in order, with errors surfaced."""

from __future__ import annotations

import time

import numpy as np
import pytest

from runtime.backends.openvino_backend import AsyncQueue
from runtime.detector import Detector
from runtime.pipeline import Pipeline, _WorkerEngine
from runtime.sources import Frame


def _frames(images: list[np.ndarray], count: int) -> list[Frame]:
    return [Frame("test", i, images[i % len(images)]) for i in range(count)]


@pytest.mark.parametrize("fmt, engine", [("openvino", AsyncQueue), ("onnx", _WorkerEngine)])
def test_pipelined_results_are_identical_and_in_order(board_exports, board_frames, fmt, engine):
    detector = Detector.load(board_exports(fmt))
    frames = _frames(board_frames, 15)
    pipeline = Pipeline(detector, depth=3)
    used = pipeline._engine(lambda tag, outputs: None)
    assert isinstance(used, engine)
    used.wait_all()
    piped = list(pipeline.run(iter(frames)))
    assert [frame.index for frame, _ in piped] == list(range(15))
    for (_, result), expected in zip(piped, (detector.predict(f.image) for f in frames), strict=True):
        assert result.score == expected.score and result.label == expected.label and result.kind == expected.kind
        np.testing.assert_array_equal(result.heatmap, expected.heatmap)
        assert result.latency_ms > 0


def test_throughput_mode_runs_several_requests_and_agrees(board_exports, board_frames):
    detector = Detector.load(board_exports("openvino"), performance="throughput")
    reference = Detector.load(board_exports("openvino"))
    piped = [result for _, result in Pipeline(detector, depth=4).run(_frames(board_frames, 8))]
    np.testing.assert_allclose([r.score for r in piped], [reference.predict(f).score for f in board_frames * 2][:8],
                               rtol=1e-5)


def test_a_bad_frame_stops_the_run_with_its_error(board_bundle, board_frames):
    detector = Detector.load(board_bundle[0])
    frames = _frames(board_frames, 3) + [Frame("test", 3, np.zeros((5, 5, 2), np.uint8))] + _frames(board_frames, 3)
    delivered = []
    with pytest.raises(ValueError, match=r"unsupported frame: shape \(5, 5, 2\)"):
        for frame, _ in Pipeline(detector, depth=2).run(frames):
            delivered.append(frame.index)
    assert delivered == [0, 1, 2]


def test_stopping_early_and_dropping_when_behind(board_bundle, board_frames):
    detector = Detector.load(board_bundle[0])
    started = time.perf_counter()
    for count, _ in enumerate(Pipeline(detector).run(iter(_frames(board_frames, 1000))), start=1):
        if count == 2:
            break
    assert time.perf_counter() - started < 10  # the threads stopped instead of decoding 1000 frames

    live = Pipeline(detector, depth=1, drop_when_full=True)
    results = list(live.run(_frames(board_frames, 40)))  # frames arrive far faster than inference
    assert live.dropped > 0 and len(results) + live.dropped == 40
    assert [f.index for f, _ in results] == sorted(f.index for f, _ in results)
