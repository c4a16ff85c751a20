"""The progress bars say what they count: no ``80/?`` for an uncounted bar, no ``0/?`` or ``1/1`` for a step."""

from __future__ import annotations

from edge_anomaly.progress import count_text, make_progress


def test_counts_steps_and_unknown_totals_read_as_what_they_are():
    assert count_text(7, 10, False) == "7/10"
    assert count_text(80, None, False) == "80"  # frames of a video: the total is not known while reading
    assert count_text(0, None, False) == ""  # a step that runs
    assert count_text(1, 1, True) == "done"  # a step that ran, not "1/1"


def test_bars_of_unknown_total_are_closed_with_their_count_when_the_display_ends():
    with make_progress() as progress:
        reading = progress.add_task("reading images", total=None)
        for _ in range(209):
            progress.advance(reading)
        calibrating = progress.add_task("calibrating (10-fold)", total=None)
        features = progress.add_task("extracting features", total=10)
        progress.advance(features, 4)
    tasks = {task.id: task for task in progress.tasks}
    assert (tasks[reading].completed, tasks[reading].total) == (209, 209)
    assert tasks[calibrating].finished and count_text(tasks[calibrating].completed, tasks[calibrating].total,
                                                      True) == "done"
    assert (tasks[features].completed, tasks[features].total) == (4, 10)  # a counted bar is left as it got
