"""The runtime around the engine: overhead, pipelined throughput on 1080p video, resident memory.

    python -m bench.engines [--data ../shared/data/mvtec_ad/bottle] [--bundle B ...] [--work DIR]

Without --bundle, fits PatchCore with default hyperparameters on the category (cached in --work)
and exports it as FP32 ONNX (the format every engine reads) and as INT8 in each format whose engine
runs on a CPU (``runtime.backends.CPU_FORMATS``). Prints three markdown tables:

1. per bundle, the bare engine call (the prepared 1 x H x W x 3 input through the backend) against
   ``Detector.predict`` on a decoded frame (a real test image, and the same upscaled to 1920x1080):
   median and p95 latency, and the runtime's overhead in percent (target: within 15 %);
2. a 1920x1080 video made from real test images, decoded and inspected one frame at a time against
   the pipelined runner (target: at least 1.5x the frames per second);
3. peak resident memory (VmHWM) of a fresh process that cannot import torch, loading the bundle and
   inspecting 1080p frames (target for PatchCore INT8: under 400 MB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.backends import CPU_FORMATS, ONNX_FORMAT
from runtime.detector import Detector
from runtime.image_io import list_images, read_image
from runtime.pipeline import Pipeline
from runtime.sources import InputFrames

REPO = Path(__file__).resolve().parents[1]

FULL_HD = (1920, 1080)
BUNDLES = [(ONNX_FORMAT, "fp32"), *((fmt, "int8") for fmt in CPU_FORMATS)]
# A fresh interpreter where torch cannot be imported serves the bundle; prints VmHWM and VmRSS in MiB. It imports
# the runtime this process measures: it shares the working directory (the root, for ``python -m bench.engines``),
# which ``python -c`` puts first on its path, and the environment (PYTHONPATH).
MEMORY_PROBE = """
import importlib.abc, re, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("no torch on the edge")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from runtime.detector import Detector
detector = Detector.load(sys.argv[1], threads=int(sys.argv[3]))
frame = np.load(sys.argv[2])
for _ in range(30):
    detector.predict(frame)
status = open("/proc/self/status").read()
print(*(int(re.search(key + r":\\s+(\\d+) kB", status).group(1)) / 1024 for key in ("VmHWM", "VmRSS")))
"""


def timed(run, repeats: int, warmup: int = 5) -> tuple[float, float]:
    """Median and p95 milliseconds of ``run()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def build_bundles(data: Path, work: Path) -> list[Path]:
    """Default PatchCore on ``data``, exported in each of BUNDLES (all cached under ``work``)."""
    from edge_anomaly.config import load_params
    from edge_anomaly.model import TrainedModel
    from edge_anomaly.training import fit_model
    from exporters.export import ModelExporter

    model_folder = work / "model-patchcore"
    if (model_folder / "model.json").is_file():
        model = TrainedModel.load(model_folder)
    else:
        model = fit_model(data / "train" / "good", *load_params("patchcore"))
        model.save(model_folder)
    wanted = {(fmt, precision): work / f"bundle-{fmt}-{precision}" for fmt, precision in BUNDLES}
    missing = [key for key, folder in wanted.items() if not (folder / "manifest.json").is_file()]
    if missing:
        with ModelExporter(model, calibration_data=data / "train" / "good") as exporter:
            for fmt, precision in missing:
                exporter.export(wanted[fmt, precision], fmt=fmt, precision=precision)
    return list(wanted.values())


def overhead_rows(bundle: Path, frames: dict[str, np.ndarray], threads: int, repeats: int) -> list[str]:
    detector = Detector.load(bundle, threads=threads)
    prepared = detector.prepare(frames["real"]).input[None]
    bare = timed(lambda: detector.backend.infer(prepared), repeats)
    rows = []
    for name, frame in frames.items():
        full = timed(lambda frame=frame: detector.predict(frame), repeats)
        overhead = (full[0] / bare[0] - 1) * 100
        rows.append(f"| {bundle.name} | {name} {frame.shape[1]}x{frame.shape[0]} | {bare[0]:.1f} / {bare[1]:.1f} "
                    f"| {full[0]:.1f} / {full[1]:.1f} | {overhead:+.1f} % |")
    return rows


def make_video(images: list[Path], path: Path, count: int) -> Path:
    """An MJPEG 1920x1080 video of ``count`` frames cycling through real test images."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, FULL_HD)
    for index in range(count):
        frame = cv2.imread(str(images[index % len(images)]), cv2.IMREAD_COLOR)
        writer.write(cv2.resize(frame, FULL_HD, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def throughput_row(bundle: Path, video: Path, threads: int) -> str:
    """Frames per second over the whole video: decode then predict one frame at a time, against the
    pipelined runner (OpenVINO async requests or a worker thread) on a detector of its own."""
    detector = Detector.load(bundle, threads=threads)
    detector.predict(next(iter(InputFrames([str(video)]))).image)  # warm-up
    start = time.perf_counter()
    count = 0
    for frame in InputFrames([str(video)]):
        detector.predict(frame.image)
        count += 1
    sequential = count / (time.perf_counter() - start)
    del detector

    pipeline = Pipeline(Detector.load(bundle, threads=threads, performance="throughput"))
    for _ in pipeline.run(InputFrames([str(video)], every_nth=10**6)):  # warm-up: the first frame only
        pass
    start = time.perf_counter()
    piped_count = sum(1 for _ in pipeline.run(InputFrames([str(video)])))
    piped = piped_count / (time.perf_counter() - start)
    return f"| {bundle.name} | {count} | {sequential:.1f} | {piped:.1f} | {piped / sequential:.2f}x |"


def memory_row(bundle: Path, frame_file: Path, threads: int) -> str:
    run = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(bundle), str(frame_file), str(threads)],
                         capture_output=True, text=True, check=True)
    peak, resident = (float(v) for v in run.stdout.split())
    size = sum(f.stat().st_size for f in bundle.iterdir()) / 2**20
    return f"| {bundle.name} | {size:.1f} | {peak:.0f} | {resident:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle")
    parser.add_argument("--bundle", type=Path, nargs="*", help="bundles to measure (default: build them)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-anomaly-bench-runtime"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per latency figure")
    parser.add_argument("--video-frames", type=int, default=60, help="frames in the 1920x1080 test video")
    parser.add_argument("--json", type=Path, help="also write the tables' rows here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundles = args.bundle or build_bundles(args.data, args.work)
    test_images = sorted(p for folder in sorted((args.data / "test").iterdir()) for p in list_images(folder)[:2])
    real = read_image(test_images[0])
    frames = {"real": real, "upscaled": cv2.resize(real, FULL_HD, interpolation=cv2.INTER_LINEAR)}
    frame_file = args.work / "frame-1080p.npy"
    np.save(frame_file, frames["upscaled"])
    video = make_video(test_images, args.work / "line-1080p.avi", args.video_frames)

    tables = {
        "overhead": ["| bundle | frame | bare engine ms (median / p95) | Detector.predict ms (median / p95) "
                     "| overhead (median) |", "| --- | --- | ---: | ---: | ---: |"],
        "throughput": ["| bundle | frames | one at a time (frames/s) | pipelined (frames/s) | speed-up |",
                       "| --- | ---: | ---: | ---: | ---: |"],
        "memory": ["| bundle | size (MB) | peak RSS (MB) | RSS after 30 frames (MB) |", "| --- | ---: | ---: | ---: |"],
    }
    for bundle in bundles:
        tables["overhead"] += overhead_rows(bundle, frames, args.threads, args.repeats)
        tables["throughput"].append(throughput_row(bundle, video, args.threads))
        tables["memory"].append(memory_row(bundle, frame_file, args.threads))
    print(f"{args.threads} threads; test frames from {args.data}\n")
    for title, rows in tables.items():
        print(f"### {title}\n\n" + "\n".join(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(tables, indent=1))


if __name__ == "__main__":
    main()
