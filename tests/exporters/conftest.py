"""Exports of the session's board model, made once and shared by the exporter tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def board_exporter(board_model):
    """One ModelExporter for the board model: the ONNX trace and check images are made once."""
    pytest.importorskip("onnxruntime")
    from exporters.export import ModelExporter

    with ModelExporter(board_model[1]) as exporter:
        yield exporter


@pytest.fixture(scope="session")
def board_export(board_exporter, tmp_path_factory):
    """``board_export(fmt, precision, batch=None)`` -> (bundle folder, tar), each exported once."""
    root = tmp_path_factory.mktemp("exported")
    made: dict = {}

    def export(fmt: str, precision: str, batch: int | None = None):
        key = (fmt, precision, batch)
        if key not in made:
            made[key] = board_exporter.export(root / f"{fmt}-{precision}-{batch or 'dynamic'}", fmt=fmt,
                                              precision=precision, batch=batch)
        return made[key]

    return export
