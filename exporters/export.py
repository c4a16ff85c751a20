"""From a trained model to a verified bundle in the requested format and precision.

Every format starts from one FP32 ONNX trace of the model's graph (pixels to heatmap and
score). :class:`ModelExporter` keeps that trace, the calibration and parity images and the
PyTorch reference outputs, so exporting one model to several formats (the benchmark, the
tests) traces and reads images once. Each export runs the parity check and leaves no bundle
behind when it fails.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

from edge_anomaly.model import TrainedModel
from edge_anomaly.templates import get_template
from exporters.bundle import build_manifest, write_bundle
from exporters.data import ExportData, export_data
from exporters.graph_parts import PARTS
from exporters.onnx_export import INPUT_NAME, OUTPUT_NAMES, export_onnx
from exporters.parity import (
    DEFAULT_TOLERANCES,
    ParityError,
    Tolerances,
    aligned_scale,
    check_parity,
    parity_figures,
    require_finite,
)
from exporters.recipes import Int8Recipe, int8_recipe, target_isa
from exporters.steps import Steps
from runtime import self_test
from runtime.backends import BY_FORMAT, NATIVE_BACKEND, ONNX_FORMAT, EngineFiles, open_engine, run_batched
from runtime.cpu import local_cpu
from runtime.manifest import ENGINE_FORMATS, PRECISIONS, DynamicBatch, Manifest, StaticBatch

# FP16 keeps the scorer in FP32: PatchCore's |x|^2 - 2 x.m + |m|^2 cancels badly in half precision.
DEFAULT_FP16_PARTS = ["backbone"]
PARITY_BATCH = 8


def parity_batch(batch: int | None, max_batch: int) -> StaticBatch | DynamicBatch:
    """The batch the parity check runs: the engine's fixed size, else up to PARITY_BATCH images a call."""
    return StaticBatch(size=batch) if batch else DynamicBatch(max=min(PARITY_BATCH, max_batch))


def inference_precision(fmt: str, precision: str) -> str | None:
    """OpenVINO's CPU inference precision for a bundle (bf16 for a bf16 one, else f32); None for other formats."""
    if fmt != "openvino":
        return None
    return "bf16" if precision == "bf16" else "f32"


def default_parts(precision: str, template: str = "patchcore") -> list[str]:
    """The parts reduced to ``precision`` unless told otherwise; for INT8 the template's own choice
    (``Scorer.int8_parts``, measured per template)."""
    if precision == "fp32":
        return []
    if precision == "fp16":
        return list(DEFAULT_FP16_PARTS)
    if precision == "bf16":  # OpenVINO's inference precision: the whole graph, matrix products accumulate in FP32
        return list(PARTS)
    return list(get_template(template).scorer.int8_parts)


class ModelExporter:
    """Exports one trained model to bundles, sharing the ONNX trace and the check images."""

    def __init__(self, model: TrainedModel, calibration_data: str | Path | None = None,
                 steps: Steps | None = None) -> None:
        """``steps`` shows the export's progress and silences other libraries (the CLI); default: neither."""
        self.model = model
        self.calibration_data = calibration_data
        self.steps = steps or Steps()
        self._workdir = Path(tempfile.mkdtemp(prefix="edge-anomaly-export-"))
        self._traces: dict[tuple[int | None, int], Path] = {}

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> ModelExporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @cached_property
    def data(self) -> ExportData:
        return export_data(self.model, self.calibration_data)

    @cached_property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """PyTorch's (heatmaps, scores) on the parity images."""
        return self.model.infer(self.data.parity.images)

    def onnx_trace(self, batch: int | None, max_batch: int) -> Path:
        """The FP32 ONNX of the graph for a batch setting, traced once."""
        key = (batch, max_batch)
        if key not in self._traces:
            path = self._workdir / f"trace-{batch or 'dynamic'}-{max_batch}.onnx"
            self._traces[key] = export_onnx(self.model.graph, path, batch=batch, max_batch=max_batch)
        return self._traces[key]

    def export(self, out: str | Path, *, fmt: str = "onnx", precision: str = "fp32", batch: int | None = None,
               max_batch: int = 32, quantize: list[str] | None = None, tolerances: Tolerances | None = None,
               name: str | None = None, device: str | None = None, isa: str | None = None) -> tuple[Path, Path]:
        """Write the bundle folder ``out`` (replaced if present) and ``out.tar``; returns both.

        ``batch`` fixes the batch size (static shapes); ``None`` keeps it dynamic up to
        ``max_batch``. ``quantize`` lists the parts (backbone, scorer) in reduced precision;
        by default the template's choice (:func:`default_parts`). ``isa`` is the target CPU's instruction-set
        level (runtime.cpu.ISAS), which picks the INT8 recipe; default: this machine's. Raises
        :class:`ParityError` when the engine breaks ``tolerances`` (default: per precision).
        """
        if fmt not in ENGINE_FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {', '.join(ENGINE_FORMATS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if batch is not None and not 1 <= batch <= max_batch:
            raise ValueError(f"batch {batch} must be between 1 and max_batch {max_batch}")
        if precision == "bf16" and fmt != "openvino":
            raise ValueError("bf16 is OpenVINO's inference precision on CPUs with AVX-512 BF16 or AMX: "
                             "use --format openvino")
        recipe = int8_recipe(target_isa(isa)) if precision == "int8" and fmt != "tensorrt" else None
        parts = self._parts(fmt, precision, quantize)
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        files, parity, engine_scale, alignment = self._build_and_check(
            out, fmt, precision, parts, batch, max_batch, recipe, tolerances or DEFAULT_TOLERANCES[precision])
        scoring = self.model.scoring if alignment is None else \
            self.model.scoring.model_copy(update={"local": engine_scale})  # aligned for reduced precision
        engine = {**self._engine_section(fmt, precision, parts, files, batch, max_batch), "score_alignment": alignment,
                  "int8_recipe": recipe}
        manifest = build_manifest(self.model, engine, name or out.name, scoring=scoring,
                                  parity={**parity, "cpu": local_cpu()}, device_profile=device)
        write_bundle(out, manifest)
        with self.steps.step("the bundle's self-test images"):
            manifest = self._add_self_test(out, manifest)
        return write_bundle(out, manifest)

    def write_engine(self, out: Path, fmt: str) -> dict[str, str]:
        """The FP32 engine files of ``fmt`` in the folder ``out`` (file role -> name), without the parity check or
        a manifest: for graphs too large to check against PyTorch in reasonable time (bench/export.py's memory)."""
        out.mkdir(parents=True, exist_ok=True)
        return self._write_engine(out, fmt, "fp32", [], None, 32, None)

    def _parts(self, fmt: str, precision: str, quantize: list[str] | None) -> list[str]:
        """The parts in reduced precision: ``quantize`` checked against the format and precision, else the
        template's default."""
        parts = default_parts(precision, self.model.template) if quantize is None else list(quantize)
        if precision == "bf16" and parts != list(PARTS):
            raise ValueError("OpenVINO's bf16 inference precision applies to the whole graph: "
                             "leave --quantize out or give backbone,scorer")
        if fmt == "openvino" and precision == "fp16":  # the IR's FP16 compression takes every weight
            if quantize is not None and "scorer" not in parts:
                raise ValueError("OpenVINO FP16 stores every weight in FP16, the scorer's too: "
                                 "use --quantize backbone,scorer or --format onnx")
            parts = list(PARTS)
        unknown = [part for part in parts if part not in PARTS]
        if unknown or (precision != "fp32" and not parts) or (precision == "fp32" and parts) or \
                (precision == "fp16" and "backbone" not in parts):
            raise ValueError(f"quantize {parts}: give backbone and/or scorer for int8, backbone (optionally with "
                             "scorer) for fp16, none for fp32")
        return parts

    def _build_and_check(self, out: Path, fmt: str, precision: str, parts: list[str], batch: int | None,
                         max_batch: int, recipe: Int8Recipe | None, tolerances: Tolerances):
        """(engine files, parity figures, the engine's score scale, its alignment or None): the engine written
        into ``out`` and checked against PyTorch on the parity images; on any failure ``out`` is removed."""
        step = self.steps.step
        try:
            with step("reading calibration and parity images"):
                images = self.data.parity.images
            with step("tracing the model to ONNX"):
                self.onnx_trace(batch, max_batch)
            with step(f"writing the {fmt} {precision} engine"):
                files = self._write_engine(out, fmt, precision, parts, batch, max_batch, recipe)
            with step(f"PyTorch on {len(images)} parity images"):
                reference = self.reference
            with step(f"the engine on {len(images)} parity images"):
                # The runtime's own loader, so the check measures what an edge box runs.
                engine = open_engine(EngineFiles.of_model(out / files["model"], fmt, self.model.input_size,
                                                          parity_batch(batch, max_batch),
                                                          inference_precision=inference_precision(fmt, precision)),
                                     NATIVE_BACKEND[fmt])
                outputs = run_batched(engine, images)
                del engine
            require_finite(*outputs)
            scale = engine_scale = self.model.scoring.local
            alignment = None
            if precision != "fp32":
                engine_scale, alignment = aligned_scale(scale, reference[1], outputs[1])
            figures = parity_figures(self.data.parity, reference, scale, outputs, engine_scale)
            return files, check_parity(figures, tolerances), engine_scale, alignment
        except Exception as exc:  # a failed check or build leaves nothing that could be deployed
            shutil.rmtree(out)
            here = local_cpu().isa
            if isinstance(exc, ParityError) and recipe is not None and int8_recipe(here) != recipe:
                raise ParityError(f"{exc}; checked on this {here} CPU with the INT8 recipe for {recipe.target_isa}: "
                                  f"export on a CPU of the target's kind, or pass --target-isa {here}") from None
            raise

    def _add_self_test(self, out: Path, manifest: Manifest) -> Manifest:
        """``manifest`` with a few normal images and the scores the written bundle's own engine gives them."""
        from runtime.detector import Detector

        calibration = self.data.calibration
        picks = np.linspace(0, len(calibration) - 1, min(self_test.SELF_TEST_IMAGES, len(calibration))).round()
        images = calibration[picks.astype(int)]
        detector = Detector.load(out, backend=NATIVE_BACKEND[manifest.engine.format])
        scores = detector.infer(images)[1]
        del detector
        files = self_test.write_images(out, images)
        return manifest.model_copy(update={"self_test": self_test.section(files, scores, manifest.engine.precision)})

    def _write_engine(self, out: Path, fmt: str, precision: str, parts: list[str], batch: int | None,
                      max_batch: int, recipe: Int8Recipe | None) -> dict[str, str]:
        trace = self.onnx_trace(batch, max_batch)
        calibration = self.data.calibration
        files = BY_FORMAT[fmt].bundle_files()  # the file names the runtime's loader expects
        if fmt == "openvino":
            from exporters.openvino_export import export_openvino

            export_openvino(trace, out / files["model"], precision, parts=parts, calibration=calibration,
                            batch=batch or 1, overflow_fix=recipe is not None and recipe.saturates)
            return files
        onnx_file = out / files.get("onnx", files["model"])
        if precision == "fp32":
            shutil.copyfile(trace, onnx_file)
        elif precision == "fp16" and fmt == ONNX_FORMAT:
            from exporters.onnx_precision import convert_fp16

            convert_fp16(trace, onnx_file, parts)
        elif precision == "fp16":  # TensorRT takes FP32 ONNX and builds FP16 kernels itself
            shutil.copyfile(trace, onnx_file)
        else:
            from exporters.onnx_precision import quantize_int8

            quantize_int8(trace, onnx_file, calibration, parts, batch=batch or 1, symmetric=fmt == "tensorrt",
                          uint8_weights=recipe is not None and recipe.saturates)
        if fmt == ONNX_FORMAT:
            return files
        from exporters.tensorrt_export import build_engine

        height, width = self.model.input_size
        build_engine(onnx_file, out / files["model"], precision, height=height, width=width, batch=batch,
                     max_batch=max_batch, fp32_nodes_from=None if "scorer" in parts else trace)
        return files

    def _engine_section(self, fmt: str, precision: str, parts: list[str], files: dict[str, str],
                        batch: int | None, max_batch: int) -> dict:
        height, width = self.model.input_size
        batch_dim = batch if batch else -1
        section = {
            "format": fmt,
            "precision": precision,
            "quantized": parts,
            "parts": {part: precision if part in parts else "fp32" for part in PARTS},
            "files": files,
            "inference_precision": inference_precision(fmt, precision),
            "batch": {"dynamic": False, "size": batch} if batch else {"dynamic": True, "max": max_batch},
            "inputs": [{"name": INPUT_NAME, "shape": [batch_dim, height, width, 3], "dtype": "uint8"}],
            "outputs": [{"name": OUTPUT_NAMES[0], "shape": [batch_dim, height, width], "dtype": "float32"},
                        {"name": OUTPUT_NAMES[1], "shape": [batch_dim], "dtype": "float32"}],
        }
        if precision == "int8":
            section["calibration"] = {"images": len(self.data.calibration),
                                      "folder": self.data.parity.description["normal_folder"]}
        if "scorer" in parts and precision == "int8":
            section["parts"]["scorer"] = "int8 matrix-product inputs, float distances"
        return section


def export_bundle(model: TrainedModel, out: str | Path, *, fmt: str = "onnx", precision: str = "fp32",
                  batch: int | None = None, max_batch: int = 32, calibration_data: str | Path | None = None,
                  steps: Steps | None = None, **options) -> tuple[Path, Path]:
    """Export ``model`` into the bundle folder ``out`` (replaced if present) and ``out.tar``."""
    with ModelExporter(model, calibration_data, steps) as exporter:
        return exporter.export(out, fmt=fmt, precision=precision, batch=batch, max_batch=max_batch, **options)


__all__ = ["ModelExporter", "ParityError", "Tolerances", "default_parts", "export_bundle"]
