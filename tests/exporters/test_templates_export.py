"""Every registered template exports to every engine format and passes the parity check.

Parametrised over the registry, so a new template is exported, checked against PyTorch and
reloaded through the runtime without a line added here; formats whose engine is not installed
here are skipped with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fits every template (briefly) and exports each to every format

torch = pytest.importorskip("torch")

from edge_anomaly.templates import TEMPLATES  # noqa: E402
from runtime.manifest import ENGINE_FORMATS  # noqa: E402

# Short fits: the settings that make a template quick, for whichever template has them; the rest keep defaults.
QUICK = {"input_size": [64, 96], "coreset_ratio": 0.1, "n_features": 16, "iterations": 40, "eval_every": 20,
         "batch_size": 4, "global_checks": False, "false_alarm_rate": 0.05}


@pytest.fixture(scope="module")
def fitted(boards):
    """``fitted(name)`` -> the template fitted briefly on the board images, once per module."""
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    models: dict = {}

    def fit(name: str):
        if name not in models:
            fields = TEMPLATES[name].params.model_fields
            overrides = [f"{key}={json.dumps(value)}" for key, value in QUICK.items() if key in fields]
            template, params = load_params(name, overrides=overrides)
            models[name] = fit_model(boards, template, params)
        return models[name]

    return fit


def _engine_missing(fmt: str) -> str | None:
    from runtime.backends import NATIVE_BACKEND, is_installed

    if not is_installed(NATIVE_BACKEND[fmt]):
        return f"the {NATIVE_BACKEND[fmt]} engine is not installed here"
    if fmt == "tensorrt" and not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU; none here"
    return None


@pytest.mark.parametrize("fmt", [pytest.param(fmt, marks=pytest.mark.gpu) if fmt == "tensorrt" else fmt
                                 for fmt in ENGINE_FORMATS])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_exports_to_every_format(fitted, name, fmt, tmp_path):
    reason = _engine_missing(fmt)
    if reason:
        pytest.skip(reason)
    from exporters.export import export_bundle
    from runtime.detector import Detector

    model = fitted(name)
    folder, tar = export_bundle(model, tmp_path / f"{name}-{fmt}", fmt=fmt, precision="fp32")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["template"] == name and manifest["engine"]["format"] == fmt and tar.is_file()
    assert manifest["parity"]["passed"] and manifest["engine"]["quantized"] == []
    images = np.stack([np.full((64, 96, 3), value, np.uint8) for value in (40, 128)])
    scores = Detector.load(folder).infer(images)[1]
    assert np.allclose(scores, model.infer(images)[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_int8_quantises_the_parts_the_template_declares(name):
    from exporters.export import default_parts

    assert default_parts("int8", name) == list(TEMPLATES[name].scorer.int8_parts)
    assert default_parts("fp32", name) == []
