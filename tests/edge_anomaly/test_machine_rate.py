"""The machine's kept PyTorch rate: a loaded run's slow timing does not raise it, a faster one lowers it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from edge_anomaly.autoconfig.machine_rate import RATE_FILE, machine_key, machine_rate  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_ANOMALY_CACHE", str(tmp_path))
    return tmp_path / RATE_FILE


def test_the_fastest_rate_measured_here_is_kept_and_used(cache):
    assert machine_rate(2.0) == 2.0
    assert machine_rate(50.0) == 2.0  # the same machine under load: the estimate stays the machine's
    assert machine_rate(1.5) == 1.5
    assert json.loads(cache.read_text()) == {machine_key(): 1.5}


def test_other_machines_rates_are_kept_beside_this_ones(cache):
    cache.write_text(json.dumps({"another CPU | 4 threads | torch 2.13.0": 0.2}))
    assert machine_rate(3.0) == 3.0
    assert json.loads(cache.read_text()) == {"another CPU | 4 threads | torch 2.13.0": 0.2, machine_key(): 3.0}


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"x": "fast"}', " " * 70_000])
def test_a_damaged_file_is_ignored_with_a_warning_and_written_again(cache, content, caplog):
    cache.write_text(content)
    assert machine_rate(4.0) == 4.0
    assert str(cache) in caplog.text
    assert json.loads(cache.read_text()) == {machine_key(): 4.0}


def test_an_unwritable_cache_only_means_this_runs_timing(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGE_ANOMALY_CACHE", str(blocker / "cache"))
    assert machine_rate(7.0) == 7.0
