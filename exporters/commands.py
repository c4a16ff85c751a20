"""``edge-anomaly export``: registered into the main command by edge_anomaly.cli."""

from __future__ import annotations

import argparse


def run_export(args: argparse.Namespace) -> None:
    from edge_anomaly.model import TrainedModel
    from exporters.export import export_bundle

    folder, archive = export_bundle(TrainedModel.load(args.model), args.out, fmt=args.format,
                                    precision=args.precision, batch=args.batch if args.static else None)
    print(f"bundle written to {folder} and {archive}")



def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="export a model as an ONNX, OpenVINO or TensorRT bundle")
    export.add_argument("model", help="model folder")
    export.add_argument("--format", choices=["onnx", "openvino", "tensorrt"], default="onnx")
    export.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    export.add_argument("--batch", type=int, default=1, help="batch size for --static")
    export.add_argument("--static", action="store_true", help="fixed batch and shapes (Intel NPU)")
    export.add_argument("--out", required=True, help="bundle folder to write (a .tar twin is written beside it)")
    export.set_defaults(run=run_export)
