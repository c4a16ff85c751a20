"""The drift monitor on generated boards: a slow lighting ramp and a new component colour are reported,
naming the statistic that moved; an unchanged line never is.

Frames are fed at a simulated 2 fps (the monitor is told each frame's time). Scores and global
statistics come from the board model's own predictions on freshly generated boards it never saw;
the ramp's frames are the same boards dimmed (their statistics measured on the dimmed frames, their
scores those of the undimmed ones: a gain change moves whole-image statistics, hardly patch
features, and predicting every ramp frame would cost a minute).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fits drifting lines: not in -m "not slow"

pytest.importorskip("torch")

from runtime.global_stats import LIGHTING_STATS, image_statistics  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402
from runtime.manifest import DriftReference  # noqa: E402
from runtime.preprocess import frame_to_input  # noqa: E402
from runtime.station.drift import DRIFT, LEARNING, OK, DriftMonitor, Reference  # noqa: E402

FPS = 2.0


@pytest.fixture(scope="module")
def reference(board_model) -> Reference:
    from exporters.bundle import drift_reference

    return Reference.from_manifest(DriftReference.model_validate(drift_reference(board_model[1])))


@pytest.fixture(scope="module")
def line(board_model, tmp_path_factory) -> list[np.ndarray]:
    """40 good boards the model never saw, as a line camera would deliver them."""
    from edge_anomaly.data.synthetic import generate_boards

    folder = generate_boards(tmp_path_factory.mktemp("line"), n_train=40, n_test_good=0, n_per_defect=0,
                             size=(320, 256), seed=5)
    return [read_image(p) for p in list_images(folder / "train" / "good")]


def observations(model, frames: list[np.ndarray]) -> list[tuple[float, np.ndarray]]:
    results = [r for start in range(0, len(frames), 8) for r in model.predict(frames[start:start + 8])]
    return [(r.kind_scores["local"], r.global_stats) for r in results]


@pytest.fixture(scope="module")
def unchanged(board_model, line) -> list[tuple[float, np.ndarray]]:
    return observations(board_model[1], line)


def feed(monitor: DriftMonitor, stream, start: float = 0.0) -> list[tuple[float, object]]:
    """(simulated time, new state) of every onset and clear."""
    changes = []
    for index, (score, stats) in enumerate(stream):
        moment = start + index / FPS
        change = monitor.observe(score, stats, moment)
        if change is not None:
            changes.append((moment, change))
    return changes


def relit_stats(frame: np.ndarray, gain: float) -> np.ndarray:
    dimmed = np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return image_statistics(frame_to_input(dimmed, (256, 256)))


def test_an_unchanged_line_never_drifts(reference, unchanged):
    monitor = DriftMonitor(reference)
    frames = 30 * 60 * int(FPS) // 4  # 7.5 minutes of the 40 boards in turn (bench/drift.py soaks 30)
    assert feed(monitor, (unchanged[i % len(unchanged)] for i in range(frames))) == []
    assert monitor.state.state == OK and monitor.state.reference == "bundle"
    measures = monitor.measures()
    assert max(ratio for _, ratio in measures.values()) < 1.0, measures


def test_a_slow_lighting_ramp_is_reported_within_five_minutes_and_clears_once(reference, unchanged, line):
    monitor = DriftMonitor(reference)
    steady = [unchanged[i % len(line)] for i in range(240)]
    ramp_frames = 10 * 60 * int(FPS)  # the lamp loses 30 % over 10 minutes
    ramp = [(unchanged[i % len(line)][0], relit_stats(line[i % len(line)], 1.0 - 0.3 * i / ramp_frames))
            for i in range(0, ramp_frames)]
    restored = [unchanged[i % len(line)] for i in range(600)]
    changes = feed(monitor, steady + ramp + restored)
    assert [change.state for _, change in changes] == [DRIFT, OK]  # once on, once off: no flapping
    onset_s, onset = changes[0]
    assert onset_s - len(steady) / FPS < 5 * 60
    assert onset.statistic in LIGHTING_STATS and onset.reference == "bundle"
    assert dict(onset.moved)[onset.statistic] == onset.value < 0  # darker
    assert onset.to_dict()["since"].endswith("Z") and onset.value is not None


def test_a_new_component_colour_is_reported(board_model, reference, unchanged, line):
    recoloured = []
    for frame in line:  # the black IC bodies come from a new supplier in dark blue
        frame = frame.copy()
        body = (frame.max(axis=2) < 70) & (np.ptp(frame.astype(np.int16), axis=2) < 14)
        frame[body] = (40, 60, 150)
        recoloured.append(frame)
    new = observations(board_model[1], recoloured)
    monitor = DriftMonitor(reference)
    changes = feed(monitor, [unchanged[i % len(line)] for i in range(240)] + [new[i % len(new)] for i in range(600)])
    assert [change.state for _, change in changes] == [DRIFT]
    assert changes[0][0] >= 240 / FPS
    assert changes[0][1].statistic in ("score", "near_threshold", "chroma_red", "chroma_green", "chroma_blue")


def test_without_a_reference_the_first_window_is_learnt(unchanged, line):
    monitor = DriftMonitor(None, window=60)
    assert monitor.state.state == LEARNING and monitor.state.to_dict()["reference"] is None
    assert feed(monitor, (unchanged[i % len(line)] for i in range(400))) == []
    assert monitor.state.state == OK and monitor.state.reference == "learned"
    ramp = [(unchanged[i % len(line)][0], relit_stats(line[i % len(line)], 1.0 - 0.3 * i / 1200)) for i in range(600)]
    changes = feed(monitor, ramp, start=200.0)
    assert [c.state for _, c in changes] == [DRIFT] and changes[0][1].reference == "learned"
