"""Frames from videos, folders, cameras and a real MJPEG stream over HTTP: skipping, corruption, reconnecting."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import cv2
import numpy as np
import pytest
from mjpeg_server import MjpegCamera, free_port

from edge_anomaly.cli import main
from runtime.detector import Detector
from runtime.image_io import list_images
from runtime.predict_files import predict_files
from runtime.sources import Backoff, InputFrames, SourceError
from tests.harness.data import BOTTLE, read_rgb


def _write_video(path, frames_rgb: list[np.ndarray], fps: float) -> None:
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def camera_frames(boards) -> list[np.ndarray]:
    """What the test camera shows: real bottle images when the shared data is there, else boards."""
    folder = BOTTLE / "test" / "good" if BOTTLE.is_dir() else boards / "test" / "good"
    return read_rgb(list_images(folder)[:3])


@pytest.mark.slow
def test_short_real_video_through_predict_gives_a_line_per_frame_and_an_overlay_video(bottle, tmp_path):
    _, bundles, frames = bottle
    video = tmp_path / "bottles.avi"
    _write_video(video, frames + frames[:1], fps=5)  # 6 real frames, 512x512
    out = tmp_path / "pred"
    assert main(["predict", str(bundles["openvino"]), str(video), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == [0, 1, 2, 3, 4, 5]
    capture = cv2.VideoCapture(str(video))
    decoded = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(6)]
    expected = Detector.load(bundles["openvino"]).predict(decoded)
    assert [row["label"] for row in rows] == [r.label for r in expected]
    np.testing.assert_allclose([row["score"] for row in rows], [r.score for r in expected], rtol=1e-5)
    overlay = cv2.VideoCapture(rows[0]["overlay"])
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (overlay.get(cv2.CAP_PROP_FRAME_WIDTH), overlay.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (512, 512)

    piped = tmp_path / "piped"
    assert main(["predict", str(bundles["onnx"]), str(video), "--out", str(piped), "--pipelined",
                 "--every-nth", "2"]) == 0
    rows = [json.loads(line) for line in (piped / "predictions.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == [0, 2, 4]
    np.testing.assert_allclose([row["score"] for row in rows], [expected[i].score for i in (0, 2, 4)], rtol=1e-3)


def test_every_nth_and_max_fps_pick_frames_by_the_videos_clock(board_frames, tmp_path):
    video = tmp_path / "ten.avi"
    _write_video(video, [board_frames[i % len(board_frames)] for i in range(10)], fps=10)
    assert [f.index for f in InputFrames([str(video)], every_nth=2)] == [0, 2, 4, 6, 8]
    source = InputFrames([str(video)], max_fps=2.5)  # one frame per 0.4 s of a 10 fps video
    assert [f.index for f in source] == [0, 4, 8]
    assert source.statuses[0].skipped == 7 and source.statuses[0].state == "ended"
    with pytest.raises(ValueError, match="every_nth must be >= 1"):
        InputFrames([str(video)], every_nth=0)


def test_folders_globs_and_corrupt_files_are_counted_and_named(boards, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for path in list_images(boards / "test" / "good")[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    frames = InputFrames([str(folder), str(boards / "test" / "scratch" / "00[01].png")])
    assert [f.source.rsplit("/", 1)[-1] for f in frames] == ["000.png", "001.png", "000.png", "001.png"]
    assert [s.corrupt for s in frames.statuses] == [1, 0]
    assert "broken.png" in frames.statuses[0].problems[0]
    with pytest.raises(FileNotFoundError, match="nowhere.png: no such file"):
        InputFrames([str(tmp_path / "nowhere.png")])


def test_stream_that_drops_is_reopened_with_backoff(board_bundle, camera_frames, caplog):
    detector = Detector.load(board_bundle[0])
    camera = MjpegCamera(camera_frames, free_port()).start()
    seen: list[int] = []

    def drop_after_six_frames() -> None:
        """The camera drops off the network once it has sent 6 frames and comes back 1.2 s later: counted where
        they are sent, so however many a slow reader still holds, the 10 frames asked for need a reconnect."""
        while camera.sent < 6:
            time.sleep(0.005)
        camera.stop()
        time.sleep(1.2)
        camera.start()

    dropper = threading.Thread(target=drop_after_six_frames, daemon=True)
    dropper.start()
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.sources"):
            run = predict_files(detector, [camera.url], on_frame=lambda row: seen.append(row["frame"]),
                                max_frames=10, backoff=Backoff(min_s=0.2, attempts=8))
    finally:
        dropper.join(timeout=30)
        camera.stop()
    status = run.sources[0]
    assert run.frames == 10 and seen == sorted(seen) and len(set(seen)) == 10
    assert status.reconnects == 1 and status.failed_opens >= 2 and status.state == "ended"
    waits = [float(w) for w in re.findall(r"retrying in ([\d.]+) s", caplog.text)]
    assert waits[:3] == [0.2, 0.4, 0.8][:len(waits[:3])] and len(waits) >= 2  # doubling back-off
    assert "stream dropped" in caplog.text


def test_stream_that_stays_down_gives_up_with_a_named_error(board_bundle, camera_frames, capsys):
    url = f"http://127.0.0.1:{free_port()}/stream.mjpg"  # nothing listens there
    with pytest.raises(SourceError, match=re.escape(f"{url}: cannot open after 3 attempts")):
        list(InputFrames([url], backoff=Backoff(min_s=0.05, attempts=2)))
    assert main(["predict", str(board_bundle[0]), url, "--reconnect-attempts", "0"]) == 2
    assert url in capsys.readouterr().err
    with pytest.raises(SourceError, match="camera:7: cannot open after 2 attempts"):
        list(InputFrames(["7"], backoff=Backoff(min_s=0.01, attempts=1)))


def test_corrupt_stream_frames_are_skipped_and_reported(board_bundle, camera_frames, capsys):
    camera = MjpegCamera(camera_frames, free_port(), garbage_every=3).start()
    try:
        assert main(["predict", str(board_bundle[0]), camera.url, "--max-frames", "6"]) == 0
    finally:
        camera.stop()
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["frame"] for row in rows] == [0, 1, 3, 4, 6, 7]  # every third part was not a JPEG
    assert "2 unreadable skipped" in captured.err and "frame 2: could not be decoded" in captured.err


def test_a_source_that_loses_every_frame_logs_the_first_twenty_then_one_warning_a_minute(caplog, monkeypatch):
    import runtime.sources as sources

    status = sources.SourceStatus("rtsp://camera")
    with caplog.at_level(logging.WARNING, logger="runtime.sources"):
        for index in range(25):  # at 30 fps: within the same minute
            status.skip_corrupt(f"frame {index} undecodable")
        assert len(caplog.records) == sources.LOGGED_PROBLEMS == 20
        monkeypatch.setattr(sources, "PROBLEM_LOG_EVERY_S", 0.0)  # the minute is over
        status.skip_corrupt("frame 25 undecodable")
    assert caplog.records[-1].getMessage() == "skipping frame 25 undecodable (5 more skipped since the last warning)"
    assert status.corrupt == 26 and len(status.problems) == 20 and status.last_error == "frame 25 undecodable"
    assert not any(key.startswith("_") for key in status.to_dict())  # the log's bookkeeping is not reported
    assert "_unlogged" not in repr(status)
    from runtime.genicam import GenicamStatus

    assert not any(key.startswith("_") for key in GenicamStatus("genicam:GV01").to_dict())  # nor a camera's
