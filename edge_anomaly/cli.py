"""The ``edge-anomaly`` command.

Every command imports what it needs when it runs: ``predict`` and ``bench`` on a bundle must
work on an edge box where torch is not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_anomaly import __version__


def _print_metrics(metrics: dict) -> None:
    from edge_anomaly.evaluation.report import metrics_table, per_defect_table

    print(metrics_table(metrics))
    if metrics.get("per_defect"):
        print()
        print(per_defect_table(metrics))


def cmd_fit(args: argparse.Namespace) -> None:
    from edge_anomaly.config import load_params
    from edge_anomaly.training import fit_model

    template, params = load_params(args.template, args.config, args.set)
    model = fit_model(args.data, template, params, defects=args.defects)
    model.save(args.out)
    scale = model.scoring.local
    print(f"saved {template} model to {args.out} (fit {model.info['fit_seconds']} s, "
          f"threshold {scale.threshold:.4g} from {model.info['threshold_mode']})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from edge_anomaly.evaluation.evaluate import evaluate_model
    from edge_anomaly.model import TrainedModel

    metrics = evaluate_model(TrainedModel.load(args.model), args.data, args.report)
    _print_metrics(metrics)
    if args.report:
        print(f"\nreport written to {args.report}")


def load_predictor(path: str, backend: str = "auto", device: str | None = None, roi: list[int] | None = None,
                   center_crop: float | None = None, threads: int | None = None, performance: str = "latency"):
    """A model folder (PyTorch) or an exported bundle (runtime engines), by what the folder holds.

    ``backend``, ``device``, ``roi``, ``center_crop``, ``threads`` and ``performance`` apply to bundles.
    """
    folder = Path(path)
    if (folder / "model.json").is_file():
        if backend != "auto" or device or roi or center_crop or threads:
            raise ValueError(f"{path} is a model folder: --backend, --device, --threads, --roi and --center-crop "
                             "apply to exported bundles (edge-anomaly export)")
        from edge_anomaly.model import TrainedModel

        return TrainedModel.load(folder)
    if (folder / "manifest.json").is_file() or folder.suffix == ".tar":
        from runtime.detector import Detector

        return Detector.load(folder, backend=backend, device=device, threads=threads, roi=roi,
                             center_crop=center_crop, performance=performance)
    raise FileNotFoundError(f"{path}: neither a model folder (model.json) nor a bundle (manifest.json)")


def cmd_predict(args: argparse.Namespace) -> None:
    from edge_anomaly.progress import make_progress
    from runtime.predict_files import predict_files
    from runtime.sources import Backoff

    predictor = load_predictor(args.model, args.backend, args.device, args.roi, args.center_crop, args.threads,
                               "throughput" if args.pipelined else "latency")

    def show(row: dict) -> None:
        progress.advance(task)
        if args.out is None:
            print(json.dumps(row), flush=True)

    with make_progress() as progress:
        task = progress.add_task("predicting", total=None)
        run = predict_files(predictor, args.inputs, args.out, batch_size=args.batch, on_frame=show,
                            every_nth=args.every_nth, max_fps=args.max_fps, pipelined=args.pipelined,
                            max_frames=args.max_frames, backoff=Backoff(attempts=args.reconnect_attempts))
    summary = f"{run.frames} frames, {run.anomalous} anomalous"
    skipped = sum(status.skipped for status in run.sources) + run.dropped
    if skipped:
        summary += f", {skipped} skipped (--every-nth/--max-fps or inference behind a live source)"
    if run.corrupt:
        summary += f", {len(run.corrupt)} unreadable skipped: " + "; ".join(run.corrupt[:5])
    reconnects = sum(status.reconnects for status in run.sources)
    if reconnects:
        summary += f", {reconnects} reconnects"
    print(summary + (f"; results in {args.out}" if args.out else ""), file=sys.stderr)


def _roi(text: str) -> list[int]:
    """``x,y,w,h`` for --roi."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: expected four integers x,y,w,h") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: expected four integers x,y,w,h")
    return values


def cmd_templates(args: argparse.Namespace) -> None:
    from edge_anomaly.templates import TEMPLATES

    for template in TEMPLATES.values():
        print(f"{template.name}: {template.summary}")
        for name, field in template.params.model_fields.items():
            default = field.get_default(call_default_factory=True)
            print(f"  {name:<20} default {json.dumps(default, default=str):<28} {field.description or ''}")
        print()


def cmd_demo(args: argparse.Namespace) -> None:
    from edge_anomaly.demo import run_demo

    metrics = run_demo(args.out, args.data, args.template, args.set)
    _print_metrics(metrics)
    print(f"\nmodel in {Path(args.out) / 'model'}, report in {Path(args.out) / 'report'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-anomaly", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-anomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="learn normal from a folder of good images")
    fit.add_argument("--data", required=True, help="folder of normal images (or an MVTec category root)")
    fit.add_argument("--template", help="patchcore, padim or student_teacher (default: from --config, else patchcore)")
    fit.add_argument("--config", help="YAML file of hyperparameters")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    fit.add_argument("--defects", help="folder of defect examples: choose the F1-optimal threshold")
    fit.add_argument("--out", required=True, help="model folder to write")
    fit.set_defaults(run=cmd_fit)

    evaluate = commands.add_parser("evaluate", help="metrics on an MVTec-layout test set")
    evaluate.add_argument("model", help="model folder")
    evaluate.add_argument("--data", required=True, help="category root with test/ and ground_truth/")
    evaluate.add_argument("--report", help="folder for metrics.json, metrics.md, roc.png and overlays")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="heatmaps and verdicts for images, folders and videos")
    predict.add_argument("model", help="model folder or exported bundle")
    predict.add_argument("inputs", nargs="+",
                         help="image files, folders, glob patterns, video files, camera indexes (0, 1, ...) "
                              "or rtsp:// / http:// stream URLs")
    predict.add_argument("--out", help="folder for predictions.jsonl and overlays (default: JSON lines on stdout)")
    predict.add_argument("--batch", type=int, default=1, help="frames per inference call")
    predict.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "openvino", "tensorrt"],
                         help="engine for a bundle (default: by the bundle's format and what is installed)")
    predict.add_argument("--device", help="CPU, GPU or NPU (OpenVINO); CUDA (onnxruntime); cuda:N (TensorRT)")
    predict.add_argument("--threads", type=int, help="engine CPU threads (default: the engine's choice)")
    predict.add_argument("--roi", type=_roi, metavar="X,Y,W,H",
                         help="inspect only this rectangle of each frame, in frame pixels (bundles)")
    predict.add_argument("--center-crop", type=float, metavar="FRACTION",
                         help="inspect a centred square of this fraction of the shorter side (bundles)")
    predict.add_argument("--every-nth", type=int, default=1, metavar="N", help="videos/streams: keep every Nth frame")
    predict.add_argument("--max-fps", type=float, help="videos/streams: at most this many frames per second")
    predict.add_argument("--max-frames", type=int, help="stop after this many frames (for cameras and streams)")
    predict.add_argument("--reconnect-attempts", type=int, default=5, metavar="N",
                         help="cameras/streams: failed opens in a row before giving up (default 5)")
    predict.add_argument("--pipelined", action="store_true",
                         help="overlap decoding, preprocessing and inference (bundles; higher throughput)")
    predict.set_defaults(run=cmd_predict)

    templates = commands.add_parser("templates", help="list templates and their hyperparameters")
    templates.set_defaults(run=cmd_templates)

    demo = commands.add_parser("demo", help="generate data (or use --data), fit, evaluate, report")
    demo.add_argument("--data", help="MVTec-layout category instead of the generated circuit boards")
    demo.add_argument("--template", help="patchcore (default) or padim")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    demo.add_argument("--out", default="edge-anomaly-demo", help="output folder (default: ./edge-anomaly-demo)")
    demo.set_defaults(run=cmd_demo)

    # Commands of the other packages register themselves; their modules import nothing heavy.
    from devices import commands as devices_commands
    from exporters import commands as export_commands
    from runtime import commands as runtime_commands
    from runtime.station import commands as daemon_commands

    for module in (export_commands, runtime_commands, daemon_commands, devices_commands):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
