"""``edge-anomaly export``: registered into the main command through pyproject.toml's entry points."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.backends import ENGINE_FORMATS, ONNX_FORMAT
from runtime.cpu import ISAS

PROFILE_KEYS = ("format", "precision", "batch", "static", "max_batch", "isa")


def device_export_settings(name: str) -> dict:
    """The ``export`` section of device profile ``name``: defaults for the flags the user did not give."""
    from runtime.entry_points import load_device_profile

    return load_device_profile(name).export.model_dump()


def check_input_size(device: str, size: tuple[int, int]) -> None:
    """Refuse a model whose input the board cannot take (memory, NPU tiling), naming profile, limit and value."""
    from runtime.entry_points import load_device_profile

    problem = load_device_profile(device).input.problem(size)
    if problem:
        raise ValueError(f"device profile {device!r}: model input {size[0]}x{size[1]} does not fit ({problem}); "
                         "fit the model with a smaller --set input_size=[H,W] or choose another profile")


def export_settings(device: str | None, flags: dict) -> dict:
    """Format, precision, shapes and target ISA: the flags given, else the profile's, else the defaults.

    Without --precision, a profile's ``precision_by_isa`` names the precision for the target
    ISA (``intel-core-cpu``: FP32 where the target is an AVX2 CPU, on which INT8 brings no speed).
    """
    from exporters.recipes import target_isa

    settings = {"format": ONNX_FORMAT, "precision": "fp32", "batch": 1, "static": False, "max_batch": 32, "isa": None,
                "precision_by_isa": {}}
    if device:
        settings.update(device_export_settings(device))
    settings.update({key: flags[key] for key in PROFILE_KEYS if flags.get(key) is not None})
    settings["isa"] = target_isa(settings["isa"])
    if flags.get("precision") is None:
        settings["precision"] = settings["precision_by_isa"].get(settings["isa"], settings["precision"])
    return settings


def run_export(args: argparse.Namespace) -> None:
    from edge_anomaly.model import TrainedModel
    from exporters.export import export_bundle
    from exporters.parity import DEFAULT_TOLERANCES, Tolerances
    from exporters.steps import Steps

    settings = export_settings(args.device, vars(args))
    defaults = DEFAULT_TOLERANCES[settings["precision"]]
    tolerances = Tolerances(
        max_heatmap_diff=_given(args.max_heatmap_diff, defaults.max_heatmap_diff),
        min_score_rank_corr=_given(args.min_rank_corr, defaults.min_score_rank_corr),
        max_image_auroc_drop=_given(args.max_image_auroc_drop, defaults.max_image_auroc_drop),
        max_pixel_auroc_drop=_given(args.max_pixel_auroc_drop, defaults.max_pixel_auroc_drop),
    )
    from runtime.signing import load_private_key, sign_bundle

    key = load_private_key(args.sign) if args.sign else None  # a bad key fails before a minute of export
    model = TrainedModel.load(args.model)
    if args.device:
        check_input_size(args.device, model.input_size)
    try:
        folder, archive = export_bundle(
            model, args.out, fmt=settings["format"], precision=settings["precision"],
            batch=settings["batch"] if settings["static"] else None, max_batch=settings["max_batch"],
            calibration_data=args.calibration_data, quantize=args.quantize.split(",") if args.quantize else None,
            tolerances=tolerances, name=args.name, device=args.device, isa=settings["isa"],
            steps=Steps(show=True, quiet=not args.verbose))
    except (RuntimeError, ImportError) as exc:  # an engine toolkit missing or failing (TensorRT without a GPU, say)
        raise SystemExit(f"error: {exc}") from exc
    if key is not None:
        print(f"signed with key {sign_bundle(folder, key)}")
    _print_summary(folder, archive)


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def _print_summary(folder: Path, archive: Path) -> None:
    from exporters.recipes import speed_note
    from runtime.bundle import open_bundle

    manifest = open_bundle(folder).manifest
    engine, parity = manifest.engine, manifest.parity
    print(f"{engine.format} {engine.precision} bundle written to {folder} and {archive}")
    print(f"  reduced precision: {', '.join(engine.quantized) or 'none'}")
    if engine.int8_recipe is not None:
        recipe = engine.int8_recipe
        print(f"  INT8 recipe for {recipe.target_isa}: ONNX Runtime {recipe.onnxruntime}, "
              f"OpenVINO {recipe.openvino_weight_bits}-bit weights")
        if (note := speed_note(recipe)) is not None:
            print(f"  note: {note}")
    figures = {key: getattr(parity, key) for key in
               ("max_heatmap_diff", "score_rank_corr", "image_auroc_delta", "pixel_auroc_delta")}
    print("  parity with PyTorch: " + ", ".join(
        f"{key} {value:.4f}" if value is not None else f"{key} n/a" for key, value in figures.items()))
    if parity.cpu is not None:
        print(f"  measured on {parity.cpu.model} ({', '.join(parity.cpu.flags)})")
    if manifest.self_test is not None:
        print(f"  self-test: {len(manifest.self_test.images)} images, run at every load")


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a model as an ONNX, OpenVINO or TensorRT bundle, parity-checked against PyTorch")
    export.add_argument("model", help="model folder")
    export.add_argument("--format", choices=ENGINE_FORMATS, help=f"engine format (default {ONNX_FORMAT})")
    export.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                        help="default fp32; bf16: OpenVINO on CPUs with AVX-512 BF16 or AMX")
    export.add_argument("--target-isa", dest="isa", choices=ISAS,
                        help="instruction-set level of the CPU the bundle will run on, which picks the INT8 recipe "
                             "(default: the device profile's, else this machine's)")
    export.add_argument("--device", metavar="PROFILE",
                        help="device profile giving defaults (edge-anomaly devices); flags win")
    export.add_argument("--batch", type=int, help="batch size for --static (default 1)")
    export.add_argument("--static", action="store_const", const=True, help="fixed batch and shapes (Intel NPU)")
    export.add_argument("--max-batch", type=int, dest="max_batch", help="largest batch, dynamic engines (default 32)")
    export.add_argument("--quantize", metavar="PARTS",
                        help="parts in reduced precision: backbone or backbone,scorer (default: per template)")
    export.add_argument("--calibration-data", metavar="DIR",
                        help="normal images (or an MVTec category root) for INT8 calibration and the parity check, "
                             "instead of the model's training folder")
    tolerance = export.add_argument_group("parity tolerances (defaults depend on the precision)")
    tolerance.add_argument("--max-heatmap-diff", type=float, help="largest normalised heatmap difference")
    tolerance.add_argument("--min-rank-corr", type=float, help="smallest Spearman correlation of image scores")
    tolerance.add_argument("--max-image-auroc-drop", type=float, help="largest image-AUROC drop")
    tolerance.add_argument("--max-pixel-auroc-drop", type=float, help="largest pixel-AUROC drop")
    export.add_argument("--name", help="bundle name in the manifest (default: the folder name)")
    export.add_argument("--sign", metavar="KEY", help="sign the bundle with this private key (edge-anomaly keys new)")
    export.add_argument("--out", required=True, help="bundle folder to write (a .tar twin is written beside it)")
    export.set_defaults(run=run_export)
