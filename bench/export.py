"""Exported engines against PyTorch: size, latency, AUROC and parity, per format x precision.

    python -m bench.export [--data ../shared/data/mvtec_ad/bottle] [--model DIR] [--padim-model DIR]
    python -m bench.export --skip-padim --student-teacher [--student-teacher-model DIR]
    ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.export --formats openvino --target-isa avx2

The last form runs OpenVINO as on a CPU without VNNI (oneDNN's kernels stop at AVX2), with the
INT8 recipe for such CPUs: the nearest this project gets to an AVX2-only box on a VNNI machine.

Fits PatchCore and PaDiM with default hyperparameters on the category (or loads them), exports
every CPU format x precision with the parity check on, and prints a markdown table: bundle
size, latency per image (batch 1, median and p95 after warm-up, --threads threads) and its
speed-up over ONNX Runtime FP32 of the same run, image and pixel AUROC on the whole test set,
and their differences from PyTorch FP32. Every table is headed by the CPU's model, its INT8/BF16
instruction-set flags and the load average. Then: where PatchCore's time goes per engine and
precision (backbone, nearest-neighbour search, heatmap upsampling and smoothing, the rest),
from the engines' own per-operation profiles; end-to-end ``Detector.predict`` per 256 px frame;
and the peak memory of a fresh process running a PatchCore bundle with a 100k-patch bank.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.parts import bench_parts
from edge_anomaly.data.folders import load_inputs, mvtec_test_set, read_mask
from edge_anomaly.evaluation.metrics import image_auroc, pixel_auroc
from edge_anomaly.model import TrainedModel
from exporters.export import ModelExporter
from exporters.parity import ParityError
from runtime.backends import BY_FORMAT, CPU_FORMATS, ENGINES, NATIVE_BACKEND, EngineFiles, open_engine, run_batched
from runtime.bundle import open_bundle
from runtime.cpu import local_cpu
from runtime.detector import Detector
from runtime.manifest import DynamicBatch

REPO = Path(__file__).resolve().parents[1]

CPU_EXPORTS = [(fmt, precision) for fmt in CPU_FORMATS for precision in BY_FORMAT[fmt].precisions]
BANK_ROWS = 100_000
# Loads a bundle's engine in a fresh process, runs one image and prints its peak RSS in MiB.
# VmHWM, not getrusage: ru_maxrss carries the parent's peak across fork and exec. It imports the runtime this
# process measures: it shares the working directory (the root, for ``python -m bench.export``), which ``python -c``
# puts first on its path, and the environment (PYTHONPATH).
MEMORY_PROBE = """
import re, sys, numpy as np
from runtime.backends import NATIVE_BACKEND, EngineFiles, open_engine
size = (int(sys.argv[3]), int(sys.argv[4]))
files = EngineFiles.of_model(sys.argv[2], sys.argv[1], size)
engine = open_engine(files, NATIVE_BACKEND[sys.argv[1]], threads=2)
engine.infer(np.zeros((1, *size, 3), np.uint8))
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024)
"""


def latency_ms(run, image: np.ndarray, repeats: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        run(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def test_set(category: Path, size: tuple[int, int]):
    samples = mvtec_test_set(category)
    images, kept = load_inputs([s.path for s in samples], size)
    by_path = {s.path: s for s in samples}
    samples = [by_path[p] for p in kept]
    labels = np.array([s.label for s in samples])
    masks = [read_mask(s.mask_path, size) if s.mask_path else np.zeros(size, bool) for s in samples]
    return images, labels, masks


def fitted(template: str, data: Path, folder: str | None, work: Path) -> TrainedModel:
    if folder:
        return TrainedModel.load(folder)
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    name, params = load_params(template)
    model = fit_model(data, name, params)
    model.save(work / f"model-{template}")
    return model


def cpu_line(threads: int) -> str:
    """The CPU every figure below comes from, and how busy the machine was."""
    cpu = local_cpu()
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    capped = (f"; OpenVINO capped at {cap} by ONEDNN_MAX_CPU_ISA (its oneDNN kernels only; ONNX Runtime ignores "
              "the cap)") if cap else ""
    return (f"CPU: {cpu.model}, {os.cpu_count()} logical cores, INT8/BF16 flags: {', '.join(cpu.flags) or 'none'} "
            f"(level {cpu.isa}){capped}; {threads} threads; load average {load} (other processes share the CPU)")


def bench_template(model: TrainedModel, category: Path, work: Path, threads: int, repeats: int,
                   formats: list[str], isa: str | None) -> tuple[list[str], dict[tuple[str, str], Path]]:
    """Table rows, and the bundle folder of every format x precision that exported."""
    images, labels, masks = test_set(category, model.input_size)
    torch.set_num_threads(threads)
    heatmaps, scores = model.infer(images)
    ref_image, ref_pixel = image_auroc(labels, scores), pixel_auroc(masks, heatmaps)
    median, p95 = latency_ms(lambda x: model.infer(x), images[:1], repeats)
    measured = [(f"| {model.template} | PyTorch | fp32 | - | - |", median, p95,
                 f"{ref_image:.4f} | {ref_pixel:.4f} | - | - | - |")]
    failed, bundles = [], {}
    with ModelExporter(model) as exporter:
        for fmt, precision in [(fmt, precision) for fmt, precision in CPU_EXPORTS if fmt in formats]:
            label = f"| {model.template} | {fmt} | {precision} |"
            if precision == "bf16" and os.environ.get("ONEDNN_MAX_CPU_ISA"):
                failed.append(f"{label} - | not measured: the oneDNN ISA cap leaves OpenVINO no BF16 kernels "
                              "| | | | | | | | | |")
                continue
            try:
                folder, _ = exporter.export(work / f"{model.template}-{fmt}-{precision}", fmt=fmt, precision=precision,
                                            isa=isa)
            except (ParityError, ValueError) as exc:
                failed.append(f"{label} - | not exported: {exc} | | | | | | | | | |")
                continue
            bundles[fmt, precision] = folder
            manifest = open_bundle(folder).manifest
            size_mb = sum((folder / name).stat().st_size for name in manifest.files) / 2**20
            engine = open_engine(EngineFiles.of_model(folder / manifest.engine.files["model"], fmt, model.input_size,
                                                      DynamicBatch(max=8), manifest.engine.inference_precision),
                                 NATIVE_BACKEND[fmt], threads=threads)
            median, p95 = latency_ms(engine.infer, images[:1], repeats)
            heatmaps, scores = run_batched(engine, images)
            image, pixel = image_auroc(labels, scores), pixel_auroc(masks, heatmaps)
            parity = manifest.parity
            measured.append((f"{label} {', '.join(manifest.engine.quantized) or '-'} | {size_mb:.1f} |", median,
                             p95, f"{image:.4f} | {pixel:.4f} | {image - ref_image:+.4f} | {pixel - ref_pixel:+.4f} "
                             f"| {parity.max_heatmap_diff:.3f} / {parity.score_rank_corr:.4f} |"))
            del engine
    fp32 = next((row[1] for row in measured if row[0].startswith(f"| {model.template} | {formats[0]} | fp32 |")), None)
    rows = [f"{head} {median:.1f} | {p95:.1f} | {f'{fp32 / median:.2f}x' if fp32 else '-'} | {tail}"
            for head, median, p95, tail in measured]
    rows += failed
    for spec in ENGINES:
        if spec.format not in CPU_FORMATS:
            rows.append(f"| {model.template} | {spec.format} | {', '.join(spec.precisions)} | not measured: runs on "
                        f"{', '.join(spec.devices)}, not on a CPU | | | | | | | | | |")
    return rows, bundles


def bench_predict(bundles: dict[tuple[str, str], Path], category: Path, threads: int, repeats: int) -> list[str]:
    """End-to-end ``Detector.predict`` (resize, engine, threshold, heatmap at frame size) on 256 px frames."""
    from runtime.image_io import read_image

    frame = read_image(mvtec_test_set(category)[0].path)
    frame = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
    rows = []
    for (fmt, precision), folder in bundles.items():
        detector = Detector.load(folder, backend=NATIVE_BACKEND[fmt], threads=threads)
        median, p95 = latency_ms(detector.predict, frame, repeats)
        rows.append(f"| {fmt} | {precision} | {median:.1f} | {p95:.1f} | "
                    f"{'passed' if detector.self_test.passed else 'FAILED'} |")
    return rows


def bench_memory(model: TrainedModel, work: Path) -> list[str]:
    """A PatchCore graph whose bank has 100k rows (existing rows, jittered), written FP32 in each CPU format
    (unchecked: PyTorch on the parity images would take minutes) and run in a fresh process each."""
    graph = copy.deepcopy(model.graph)
    scorer = graph.scorer
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, scorer.memory_bank.shape[0], (BANK_ROWS,), generator=generator)
    bank = scorer.memory_bank[rows] + 0.01 * torch.randn(BANK_ROWS, scorer.memory_bank.shape[1], generator=generator)
    scorer.memory_bank, scorer.bank_sq_norms = bank, (bank * bank).sum(dim=1)
    scorer.bank_neighbors = torch.randint(0, BANK_ROWS, (BANK_ROWS, scorer.bank_neighbors.shape[1]),
                                          generator=generator)
    table = []
    with ModelExporter(dataclasses.replace(model, graph=graph)) as exporter:
        for fmt in CPU_FORMATS:
            folder = work / f"bank100k-{fmt}"
            files = exporter.write_engine(folder, fmt)
            probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, fmt, str(folder / files["model"]),
                                    *map(str, model.input_size)], capture_output=True, text=True, check=True)
            size_mb = sum((folder / name).stat().st_size for name in files.values()) / 2**20
            table.append(f"| {fmt} fp32 | {BANK_ROWS} x {bank.shape[1]} | {size_mb:.0f} | "
                         f"{float(probe.stdout.split()[-1]):.0f} |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"))
    parser.add_argument("--model", help="fitted PatchCore model folder (default: fit one)")
    parser.add_argument("--padim-model", help="fitted PaDiM model folder (default: fit one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per engine after warm-up")
    parser.add_argument("--skip-padim", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--student-teacher", action="store_true", help="also the student_teacher template")
    parser.add_argument("--student-teacher-model", help="fitted student_teacher model folder (default: fit one)")
    parser.add_argument("--formats", nargs="+", choices=CPU_FORMATS, default=list(CPU_FORMATS),
                        help="the first is the speed-up's FP32 baseline")
    parser.add_argument("--target-isa", help="INT8 recipe for this instruction-set level (default: this CPU's). "
                        "With ONEDNN_MAX_CPU_ISA=AVX2 in the environment, OpenVINO runs as on a CPU without VNNI")
    args = parser.parse_args()
    category = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        patchcore = fitted("patchcore", category, args.model, work)
        setting = (args.threads, args.repeats, args.formats, args.target_isa)
        rows, bundles = bench_template(patchcore, category, work, *setting)
        if not args.skip_padim:
            rows += bench_template(fitted("padim", category, args.padim_model, work), category, work, *setting)[0]
        if args.student_teacher or args.student_teacher_model:
            rows += bench_template(fitted("student_teacher", category, args.student_teacher_model, work), category,
                                   work, *setting)[0]
        print(f"\n### Exported engines on {category.name} ({args.threads} threads, batch 1)\n")
        print(cpu_line(args.threads) + "\n")
        print(f"| template | format | precision | reduced | size MB | median ms | p95 ms | vs {args.formats[0]} FP32 | "
              "image AUROC | pixel AUROC | d image | d pixel | parity heatmap / rank |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\n### Where PatchCore's time goes (ms per image, engines' own profiles, {args.threads} threads)\n")
        print(cpu_line(args.threads) + "\n")
        print("| format | precision | backbone | search | heatmap | rest | total profiled |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(bench_parts(bundles, patchcore, args.threads)))
        print(f"\n### Detector.predict end to end, PatchCore, one 256x256 frame ({args.threads} threads)\n")
        print(cpu_line(args.threads) + "\n")
        print("| format | precision | median ms | p95 ms | self-test at load |")
        print("|---|---|---|---|---|")
        print("\n".join(bench_predict(bundles, category, args.threads, args.repeats)))
        if not args.skip_memory:
            print(f"\n### Peak memory, PatchCore with a {BANK_ROWS}-patch bank (fresh process, one image)\n")
            print(cpu_line(2) + "\n")
            print("| engine | bank | files MB | peak RSS MiB |")
            print("|---|---|---|---|")
            print("\n".join(bench_memory(patchcore, work)))


if __name__ == "__main__":
    main()
