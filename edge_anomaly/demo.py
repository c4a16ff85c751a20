"""The main job end to end on a fresh machine: data, fit, evaluate, report.

Without ``--data`` it generates synthetic circuit boards (every defect kind the product
targets, with masks), so a new user sees the whole loop without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

from edge_anomaly.config import load_params
from edge_anomaly.data.synthetic import generate_boards
from edge_anomaly.evaluation.evaluate import evaluate_model
from edge_anomaly.training import fit_model


def run_demo(out_dir: str | Path, data: str | Path | None = None, template: str | None = None,
             overrides: list[str] | None = None) -> dict:
    """Fit and evaluate; returns the metrics. Everything lands under ``out_dir``:
    ``data/`` (when generated), ``model/`` and ``report/``."""
    out_dir = Path(out_dir)
    if data is None:
        data = generate_boards(out_dir / "data")
    template, params = load_params(template, overrides=overrides)
    model = fit_model(data, template, params)
    model.save(out_dir / "model")
    return evaluate_model(model, data, out_dir / "report", title=f"{template} on {Path(data).name}")
