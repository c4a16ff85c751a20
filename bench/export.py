"""Exported engines against PyTorch: size, latency, AUROC and parity, per format x precision.

    python bench/export.py [--data ../shared/data/mvtec_ad/bottle] [--model DIR] [--padim-model DIR]
    python bench/export.py --skip-padim --student-teacher [--student-teacher-model DIR]

Fits PatchCore and PaDiM with default hyperparameters on the category (or loads them), exports
every CPU format x precision with the parity check on, and prints a markdown table: bundle
size, latency per image (batch 1, median and p95 after warm-up, --threads threads), image and
pixel AUROC on the whole test set, and their differences from PyTorch FP32. A last table
gives the peak memory of a fresh process running a PatchCore bundle with a 100k-patch bank.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_anomaly.data.folders import load_inputs, mvtec_test_set, read_mask  # noqa: E402
from edge_anomaly.evaluation.metrics import image_auroc, pixel_auroc  # noqa: E402
from edge_anomaly.model import TrainedModel  # noqa: E402
from exporters.export import ModelExporter  # noqa: E402
from exporters.parity import ParityError  # noqa: E402
from runtime.backends import NATIVE_BACKEND, EngineFiles, open_engine, run_batched  # noqa: E402
from runtime.bundle import open_bundle  # noqa: E402
from runtime.manifest import DynamicBatch  # noqa: E402

CPU_EXPORTS = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
               ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]
BANK_ROWS = 100_000
# Loads a bundle's engine in a fresh process, runs one image and prints its peak RSS in MiB.
# VmHWM, not getrusage: ru_maxrss carries the parent's peak across fork and exec.
MEMORY_PROBE = """
import re, sys, numpy as np
sys.path.insert(0, sys.argv[3])
from runtime.backends import NATIVE_BACKEND, EngineFiles, open_engine
files = EngineFiles.of_model(sys.argv[2], sys.argv[1], (256, 256))
engine = open_engine(files, NATIVE_BACKEND[sys.argv[1]], threads=2)
engine.infer(np.zeros((1, 256, 256, 3), np.uint8))
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


def bench_template(model: TrainedModel, category: Path, work: Path, threads: int, repeats: int) -> list[str]:
    images, labels, masks = test_set(category, model.input_size)
    torch.set_num_threads(threads)
    heatmaps, scores = model.infer(images)
    ref_image, ref_pixel = image_auroc(labels, scores), pixel_auroc(masks, heatmaps)
    median, p95 = latency_ms(lambda x: model.infer(x), images[:1], repeats)
    rows = [f"| {model.template} | PyTorch | fp32 | - | - | {median:.1f} | {p95:.1f} | {ref_image:.4f} | "
            f"{ref_pixel:.4f} | - | - | - |"]
    with ModelExporter(model) as exporter:
        for fmt, precision in CPU_EXPORTS:
            label = f"| {model.template} | {fmt} | {precision} |"
            try:
                folder, _ = exporter.export(work / f"{model.template}-{fmt}-{precision}", fmt=fmt, precision=precision)
            except (ParityError, ValueError) as exc:
                rows.append(f"{label} - | not exported: {exc} | | | | | | | |")
                continue
            manifest = open_bundle(folder).manifest
            size_mb = sum((folder / name).stat().st_size for name in manifest.files) / 2**20
            engine = open_engine(EngineFiles.of_model(folder / manifest.engine.files["model"], fmt, model.input_size,
                                                      DynamicBatch(max=8)), NATIVE_BACKEND[fmt], threads=threads)
            median, p95 = latency_ms(engine.infer, images[:1], repeats)
            heatmaps, scores = run_batched(engine, images)
            image, pixel = image_auroc(labels, scores), pixel_auroc(masks, heatmaps)
            parity = manifest.parity
            rows.append(f"{label} {', '.join(manifest.engine.quantized) or '-'} | {size_mb:.1f} | {median:.1f} | "
                        f"{p95:.1f} | {image:.4f} | {pixel:.4f} | {image - ref_image:+.4f} | {pixel - ref_pixel:+.4f} "
                        f"| {parity.max_heatmap_diff:.3f} / {parity.score_rank_corr:.4f} |")
            del engine
    for precision in ("fp16", "int8"):
        rows.append(f"| {model.template} | tensorrt | {precision} | not measured: no GPU | | | | | | | | |")
    return rows


def bench_memory(model: TrainedModel, work: Path) -> list[str]:
    """A PatchCore graph whose bank has 100k rows (existing rows, jittered), exported to ONNX
    and OpenVINO FP32 and run in a fresh process each."""
    from exporters.onnx_export import export_onnx
    from exporters.openvino_export import export_openvino

    graph = copy.deepcopy(model.graph)
    scorer = graph.scorer
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, scorer.memory_bank.shape[0], (BANK_ROWS,), generator=generator)
    bank = scorer.memory_bank[rows] + 0.01 * torch.randn(BANK_ROWS, scorer.memory_bank.shape[1], generator=generator)
    scorer.memory_bank, scorer.bank_sq_norms = bank, (bank * bank).sum(dim=1)
    scorer.bank_neighbors = torch.randint(0, BANK_ROWS, (BANK_ROWS, scorer.bank_neighbors.shape[1]),
                                          generator=generator)
    onnx_path = export_onnx(graph, work / "bank100k.onnx")
    xml_path = export_openvino(onnx_path, work / "bank100k.xml", "fp32", parts=[])
    table = []
    for fmt, path in (("onnx", onnx_path), ("openvino", xml_path)):
        probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, fmt, str(path), str(REPO)],
                               capture_output=True, text=True, check=True)
        size_mb = sum(p.stat().st_size for p in [path, path.with_suffix(".bin")] if p.is_file()) / 2**20
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
    args = parser.parse_args()
    category = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        patchcore = fitted("patchcore", category, args.model, work)
        rows = bench_template(patchcore, category, work, args.threads, args.repeats)
        if not args.skip_padim:
            rows += bench_template(fitted("padim", category, args.padim_model, work), category, work,
                                   args.threads, args.repeats)
        if args.student_teacher or args.student_teacher_model:
            rows += bench_template(fitted("student_teacher", category, args.student_teacher_model, work), category,
                                   work, args.threads, args.repeats)
        print(f"\n### Exported engines on {category.name} ({args.threads} threads, batch 1)\n")
        print("| template | format | precision | reduced | size MB | median ms | p95 ms | image AUROC | "
              "pixel AUROC | d image | d pixel | parity heatmap / rank |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        if not args.skip_memory:
            print(f"\n### Peak memory, PatchCore with a {BANK_ROWS}-patch bank (fresh process, one image)\n")
            print("| engine | bank | files MB | peak RSS MiB |")
            print("|---|---|---|---|")
            print("\n".join(bench_memory(patchcore, work)))


if __name__ == "__main__":
    main()
