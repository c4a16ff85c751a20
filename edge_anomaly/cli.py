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


def load_predictor(path: str):
    """A model folder (PyTorch) or an exported bundle (runtime engines), by what the folder holds."""
    folder = Path(path)
    if (folder / "model.json").is_file():
        from edge_anomaly.model import TrainedModel

        return TrainedModel.load(folder)
    if (folder / "manifest.json").is_file() or folder.suffix == ".tar":
        from runtime.detector import Detector

        return Detector.load(folder)
    raise FileNotFoundError(f"{path}: neither a model folder (model.json) nor a bundle (manifest.json)")


def cmd_predict(args: argparse.Namespace) -> None:
    from edge_anomaly.progress import make_progress
    from runtime.predict_files import predict_files

    predictor = load_predictor(args.model)
    with make_progress() as progress:
        task = progress.add_task("predicting", total=None)
        rows = predict_files(predictor, args.inputs, args.out, batch_size=args.batch,
                             on_frame=lambda row: progress.advance(task))
    if args.out is None:
        for row in rows:
            print(json.dumps(row))
    anomalous = sum(row["label"] == "anomalous" for row in rows)
    print(f"{len(rows)} frames, {anomalous} anomalous" + (f"; results in {args.out}" if args.out else ""),
          file=sys.stderr)


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
    fit.add_argument("--template", help="patchcore or padim (default: from --config, else patchcore)")
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
    predict.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or video files")
    predict.add_argument("--out", help="folder for predictions.jsonl and overlays (default: JSON lines on stdout)")
    predict.add_argument("--batch", type=int, default=1, help="frames per inference call")
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
    from exporters import commands as export_commands
    from runtime import commands as runtime_commands
    from runtime.daemon import commands as daemon_commands

    for module in (export_commands, runtime_commands, daemon_commands):
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
