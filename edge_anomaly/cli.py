"""The ``edge-anomaly`` command.

Every command imports what it needs when it runs: ``predict`` and ``bench`` on a bundle must
work on an edge box where torch is not installed. The training side's commands are built here;
the other packages' (export, bench, serve, devices, ...) register themselves through the entry
points ``edge_anomaly.commands`` of pyproject.toml (runtime/entry_points.py), so this package,
below them, imports none of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_anomaly import __version__
from runtime.commands import add_engine_arguments
from runtime.entry_points import COMMANDS, registered

DESCRIPTION = """Visual anomaly detection from the workstation to the production line:
learn what normal looks like from good images, export the detector, run it on an edge box."""
EPILOG = """the path from images to a production line:
  edge-anomaly fit --data good/ --out model        learn normal (edge-anomaly templates: the choices)
  edge-anomaly evaluate model --data category/ --out report/   metrics and a report on a labelled test set
  edge-anomaly update model --add reviewed/normal/  add reviewed false alarms to the model (PatchCore)
  edge-anomaly export model --device PROFILE --out bundle    an engine bundle for a board (edge-anomaly devices)
  edge-anomaly predict bundle images/ --out runs/  verdicts, heatmaps and overlays
  edge-anomaly bench bundle --device PROFILE       latency, throughput and memory on this machine
  edge-anomaly package bundle --device PROFILE --out station.tar   everything a board needs
  edge-anomaly serve --config station.yaml         the station: cameras in, results over MQTT

--device always names a board profile; the engine's own device (CPU, GPU, NPU, cuda:N) is --engine-device."""


TEMPLATE_HELP = ("patchcore, padim, student_teacher or auto (edge-anomaly templates; default: from --config, else "
                 "auto: chosen by how well each candidate separates synthetic defects made on your images)")


def _print_metrics(metrics: dict) -> None:
    from edge_anomaly.evaluation.report import metrics_table, per_defect_table

    print(metrics_table(metrics))
    if metrics.get("per_defect"):
        print()
        print(per_defect_table(metrics))


def fit_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` pairs plus the flags that are hyperparameters under another name (--roi, --center-crop, ...)."""
    pairs = list(args.set)
    if args.roi is not None:
        pairs.append(f"roi={args.roi}")
    if args.center_crop is not None:
        pairs.append(f"center_crop={args.center_crop}")
    if args.false_alarm_rate is not None:
        pairs.append(f"false_alarm_rate={args.false_alarm_rate}")
    return pairs


def cmd_fit(args: argparse.Namespace) -> None:
    from edge_anomaly.autoconfig.search import CANDIDATES, THOROUGH_CANDIDATES, fit_as_configured
    from edge_anomaly.data.training_set import TrainingSet

    size_problem = None
    if args.device:
        from runtime.entry_points import load_device_profile

        size_problem = load_device_profile(args.device).input.problem
    training = TrainingSet.scan(args.data, args.every_nth, args.max_frames)
    model, _ = fit_as_configured(training, args.template, args.config, fit_overrides(args), args.defects,
                                 args.max_latency_ms, size_problem,
                                 THOROUGH_CANDIDATES if args.thorough else CANDIDATES,
                                 announce=lambda choice: print(choice.announcement()))
    template = model.template
    if args.add:
        from edge_anomaly.update import update_model

        model = update_model(model, args.add)
    model.save(args.out)
    calibration = model.info["calibration"]
    height, width = model.input_size
    estimate, upper = calibration["estimated_false_alarm_rate"], calibration.get("false_alarm_rate_upper")
    bound = f", at most {upper:.3g} with 95 % confidence from {calibration['n_scores']} held-out scores" \
        if upper is not None else ""
    promise = (f"false-alarm rate {calibration['target_false_alarm_rate']:.3g} "
               f"({'estimated ' + format(estimate, '.3g') if estimate is not None else 'not estimated'}{bound})"
               if calibration["target_false_alarm_rate"] else calibration["method"])
    print(f"saved {template} model to {args.out}: input {width}x{height}, {model.info['training_set']['n_images']} "
          f"normal images, threshold {model.scoring.local.threshold:.4g} for {promise}, "
          f"fit {model.info['fit_seconds']} s")
    if calibration["note"]:
        print(f"note: {calibration['note']}")


def cmd_update(args: argparse.Namespace) -> None:
    from edge_anomaly.model import TrainedModel
    from edge_anomaly.update import update_model

    model = update_model(TrainedModel.load(args.model), args.add, force=args.force)
    out = args.model if args.in_place else args.out
    model.save(out)
    record = model.info["updates"][-1]
    print(f"updated {args.model} -> {out}: {record['n_images']} images added from {args.add}, bank "
          f"{record['bank_entries'][0]} -> {record['bank_entries'][1]} entries, threshold "
          f"{record['threshold'][0]:.4g} -> {record['threshold'][1]:.4g}, {record['seconds']} s; "
          f"export it again to ship it (edge-anomaly export)")
    if record["forced"]:
        print(f"warning: {len(record['forced'])} image(s) far above the threshold were added (--force):\n  "
              + "\n  ".join(record["forced"]))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from edge_anomaly.evaluation.evaluate import evaluate_model
    from edge_anomaly.model import TrainedModel

    metrics = evaluate_model(TrainedModel.load(args.model), args.data, args.out, model_folder=args.model,
                             category=args.category, capture=args.capture)
    _print_metrics(metrics)
    if args.capture:
        from edge_anomaly.evaluation.capture import capture_markdown

        print("\n" + capture_markdown(metrics["capture"]))
    if args.out:
        print(f"\nreport written to {args.out}")


def load_predictor(path: str, backend: str = "auto", device: str | None = None, roi: list[int] | None = None,
                   center_crop: float | None = None, threads: int | None = None, performance: str = "latency"):
    """A model folder (PyTorch) or an exported bundle (runtime engines), by what the folder holds.

    ``backend``, ``device``, ``roi``, ``center_crop``, ``threads`` and ``performance`` apply to bundles.
    """
    folder = Path(path)
    if (folder / "model.json").is_file():
        if backend != "auto" or device or roi or center_crop or threads:
            raise ValueError(f"{path} is a model folder: --backend, --engine-device, --threads, --roi and "
                             "--center-crop apply to exported bundles (edge-anomaly export)")
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

    if args.device:
        raise ValueError(f"predict: --device names a device profile (export, package, bench); "
                         f"the engine device is --engine-device, e.g. --engine-device {args.device}")
    predictor = load_predictor(args.model, args.backend, args.engine_device, args.roi, args.center_crop,
                               args.threads, "throughput" if args.pipelined else "latency")

    def show(row: dict) -> None:
        progress.advance(task)
        if args.out is None:
            print(json.dumps(row), flush=True)

    with make_progress() as progress:
        task = progress.add_task("predicting", total=None)
        run = predict_files(predictor, args.inputs, args.out, batch_size=args.batch, on_frame=show,
                            every_nth=args.every_nth, max_fps=args.max_fps, pipelined=args.pipelined,
                            max_frames=args.max_frames, backoff=Backoff(attempts=args.reconnect_attempts),
                            on_start=lambda total: progress.update(task, total=total))
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
    for warning in run.capture_warnings.values():  # logged when seen; repeated where the summary is read
        print(f"warning: {warning}", file=sys.stderr)


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
    from edge_anomaly.demo import run_demo, video_summary

    metrics = run_demo(args.out, args.data, args.template, args.set)
    _print_metrics(metrics)
    if "video" in metrics:
        print("\n" + video_summary(metrics["video"]))
    print(f"\nmodel in {Path(args.out) / 'model'}, report in {Path(args.out) / 'report'}")


def _add_fit(commands) -> None:
    """``fit``: learn normal from good images."""
    fit = commands.add_parser("fit", help="learn normal from good images (and videos)")
    fit.add_argument("--data", required=True,
                     help="folder of normal images and/or videos, an MVTec category root, or one video file")
    fit.add_argument("--template", help=TEMPLATE_HELP)
    fit.add_argument("--config", help="YAML file of hyperparameters")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    fit.add_argument("--roi", type=_roi, metavar="X,Y,W,H",
                     help="inspect only this rectangle of every image, in image pixels (travels with the model)")
    fit.add_argument("--center-crop", type=float, metavar="FRACTION",
                     help="inspect a centred square of this fraction of the shorter side (travels with the model)")
    fit.add_argument("--false-alarm-rate", type=float, metavar="RATE",
                     help="share of good parts the threshold may flag (default 0.01)")
    fit.add_argument("--every-nth", type=int, default=1, metavar="N", help="videos: keep every Nth frame")
    fit.add_argument("--max-frames-per-video", "--max-frames", dest="max_frames", type=int, metavar="N",
                     help="videos: at most N frames from each video (--max-frames: the older name)")
    fit.add_argument("--max-latency-ms", type=float, metavar="MS",
                     help="automatic configuration: only candidates at most this slow per image (PyTorch, this CPU)")
    fit.add_argument("--thorough", action="store_true",
                     help="automatic configuration also trains the student-teacher template (minutes more; for parts "
                     "whose placement, count or orientation matters)")
    fit.add_argument("--device", metavar="PROFILE",
                     help="board profile (edge-anomaly devices): automatic configuration keeps to its input limits")
    fit.add_argument("--defects", help="folder of defect examples: choose the configuration and the F1-optimal "
                     "threshold on them instead of synthetic defects and a false-alarm rate")
    fit.add_argument("--add", metavar="DIR", help="then add these reviewed normal images to the fitted model "
                     "(as edge-anomaly update does; PatchCore)")
    fit.add_argument("--out", required=True, help="model folder to write")
    fit.set_defaults(run=cmd_fit, fits_in_torch=True)


def _add_update_and_evaluate(commands) -> None:
    """``update`` (reviewed normals into a PatchCore model) and ``evaluate``."""
    update = commands.add_parser("update", help="add reviewed normal images to a PatchCore model and recalibrate "
                                 "its threshold, without a full refit")
    update.add_argument("model", help="model folder (from edge-anomaly fit)")
    update.add_argument("--add", required=True, metavar="DIR",
                        help="folder of normal images, e.g. the station's reviewed/<camera>/normal")
    written = update.add_mutually_exclusive_group(required=True)
    written.add_argument("--out", help="model folder to write the updated model to")
    written.add_argument("--in-place", action="store_true", help="replace MODEL with the updated model")
    update.add_argument("--force", action="store_true",
                        help="add images the model scores far above its threshold too (listed; refused without it)")
    update.set_defaults(run=cmd_update, fits_in_torch=True)

    evaluate = commands.add_parser("evaluate", help="metrics on an MVTec-layout test set")
    evaluate.add_argument("model", help="model folder")
    evaluate.add_argument("--data", required=True, help="category root with test/ and ground_truth/")
    evaluate.add_argument("--out", "--report", dest="out", metavar="DIR",
                          help="folder for the report: metrics.json, metrics.md, report.html, roc.png and overlays "
                               "(--report: the older name)")
    evaluate.add_argument("--category", help="the part's name in the report (default: the --data folder's name)")
    evaluate.add_argument("--capture", action="store_true",
                          help="also score the good images under sensor noise, JPEG, exposure, shifts and blur, "
                               "and the defects under noise (how the model fares under a real camera)")
    evaluate.set_defaults(run=cmd_evaluate, fits_in_torch=True)


def _add_predict(commands) -> None:
    """``predict``: verdicts for images, folders, videos, cameras and streams."""
    predict = commands.add_parser("predict", help="heatmaps and verdicts for images, folders and videos")
    predict.add_argument("model", help="model folder or exported bundle")
    predict.add_argument("inputs", nargs="+",
                         help="image files, folders, glob patterns, video files, camera indexes (0, 1, ...) "
                              "or rtsp:// / http:// stream URLs")
    predict.add_argument("--out", help="folder for predictions.jsonl and overlays (default: JSON lines on stdout)")
    predict.add_argument("--batch", type=int, default=1, help="frames per inference call")
    add_engine_arguments(predict, "auto", "engine for a bundle (default: by the bundle's format and what is installed)",
                         "the engine's choice")
    predict.add_argument("--device", help=argparse.SUPPRESS)  # a device profile elsewhere: refused with a pointer
    predict.add_argument("--roi", type=_roi, metavar="X,Y,W,H",
                         help="inspect only this rectangle of each frame, in frame pixels (bundles)")
    predict.add_argument("--center-crop", type=float, metavar="FRACTION",
                         help="inspect a centred square of this fraction of the shorter side (bundles)")
    predict.add_argument("--every-nth", type=int, default=1, metavar="N", help="videos/streams: keep every Nth frame")
    predict.add_argument("--max-fps", type=float, help="videos/streams: at most this many frames per second")
    predict.add_argument("--max-frames", type=int, metavar="N",
                         help="stop after N frames in total, all inputs together (for cameras and streams)")
    predict.add_argument("--reconnect-attempts", type=int, default=5, metavar="N",
                         help="cameras/streams: failed opens in a row before giving up (default 5)")
    predict.add_argument("--pipelined", action="store_true",
                         help="overlap decoding, preprocessing and inference (bundles; higher throughput)")
    predict.set_defaults(run=cmd_predict)


def _add_templates_and_demo(commands) -> None:
    """``templates`` (the choices and their hyperparameters) and ``demo``."""
    templates = commands.add_parser("templates", help="list templates and their hyperparameters")
    templates.set_defaults(run=cmd_templates)

    demo = commands.add_parser("demo", help="generate data (or use --data), fit, evaluate, report")
    demo.add_argument("--data", help="MVTec-layout category instead of the generated circuit boards")
    demo.add_argument("--template", help=TEMPLATE_HELP)
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    demo.add_argument("--out", default="edge-anomaly-demo", help="output folder (default: ./edge-anomaly-demo)")
    demo.set_defaults(run=cmd_demo, fits_in_torch=True)


def _add_package_commands(commands) -> None:
    """The other packages' commands (export, bench, serve, devices, ...), each added by its entry point."""
    for register in registered(COMMANDS):
        register(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-anomaly", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-anomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the libraries' own logs and warnings during export")
    # Commands that fit or score in PyTorch keep freed memory in the process (edge_anomaly/memory.py); the station
    # does not change its allocator.
    parser.set_defaults(fits_in_torch=False)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_fit, _add_update_and_evaluate, _add_predict, _add_templates_and_demo, _add_package_commands):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.fits_in_torch:  # imported here: the edge path (predict, bench, serve) loads no training module
        from edge_anomaly.memory import keep_freed_memory

        keep_freed_memory()
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
