"""Updating a PatchCore model with reviewed normals: time, false alarms and misses before and after.

    python -m bench.update                                # bottle, default PatchCore, warmer lamp
    python -m bench.update --shift 0.8,0.8,0.8 --reviewed 20
    python -m bench.update --shift 1,1,1 --noise 2           # a noisier camera: PatchCore's own alarm

A "new normal" is made from real good bottle images under a changed lamp: each RGB channel
multiplied by ``--shift`` (default: a warmer, slightly dimmer light, as after a lamp change).
The model is fitted on ``train/good`` (PatchCore defaults); ``--reviewed`` of the relit training
images are the operator's "this was normal" reviews handed to ``update_model``, and the relit
``test/good`` images, which neither the fit nor the update saw, measure whether the new normal
still alarms. The original ``test/good`` and every defect image measure what the update costs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.accuracy import cpu_name
from edge_anomaly.config import load_params
from edge_anomaly.model import TrainedModel
from edge_anomaly.training import fit_model
from edge_anomaly.update import update_model
from runtime.image_io import list_images, read_image

REPO = Path(__file__).resolve().parents[1]

BOTTLE = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"


def relight(frame: np.ndarray, gains: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """The frame under the new lamp (per-channel gains) and, with ``noise``, a noisier sensor (grey levels)."""
    pixels = frame.astype(np.float32) * gains
    if noise > 0:
        pixels += np.random.default_rng(seed).normal(0.0, noise, frame.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def flagged(model: TrainedModel, frames: list[np.ndarray]) -> tuple[int, dict[str, int]]:
    """(frames flagged, flagged frames per kind)."""
    results = [r for start in range(0, len(frames), 8) for r in model.predict(frames[start:start + 8])]
    kinds: dict[str, int] = {}
    for result in results:
        if result.is_anomalous:
            kinds[result.kind] = kinds.get(result.kind, 0) + 1
    return sum(kinds.values()), kinds


def fitted_model(folder: Path | None, data: Path, overrides: list[str]) -> tuple[TrainedModel, str]:
    """The model to update: loaded from ``folder`` if it is one, else PatchCore fitted (and saved there)."""
    started = time.perf_counter()
    if folder is not None and folder.is_dir():
        return TrainedModel.load(folder), f"model loaded from {folder}"
    model = fit_model(data, *load_params("patchcore", overrides=overrides))
    fitted = f"fit {time.perf_counter() - started:.1f} s"
    if folder is not None:
        model.save(folder)
    return model, fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=BOTTLE)
    parser.add_argument("--shift", default="0.95,0.88,0.78", help="R,G,B gains of the new lamp")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="also Gaussian sensor noise of this many grey levels (a new camera or gain setting)")
    parser.add_argument("--reviewed", type=int, default=20, help="relit training images handed to the update")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model", type=Path, help="a model folder: loaded if it exists, else PatchCore is fitted "
                        "and saved there (default: fitted, not saved)")
    args = parser.parse_args()
    gains = np.array([float(v) for v in args.shift.split(",")], np.float32)
    if not (args.data / "train" / "good").is_dir():
        sys.exit(f"no data at {args.data} (see ../shared/data/README.md)")

    model, fitted = fitted_model(args.model, args.data, args.set)
    train = list_images(args.data / "train" / "good")
    picks = np.linspace(0, len(train) - 1, args.reviewed).round().astype(int)
    good = [read_image(p) for p in list_images(args.data / "test" / "good")]
    relit_good = [relight(f, gains, args.noise, seed) for seed, f in enumerate(good)]
    defects = {d.name: [read_image(p) for p in list_images(d)]
               for d in sorted((args.data / "test").iterdir()) if d.is_dir() and d.name != "good"}
    with tempfile.TemporaryDirectory() as tmp:
        reviewed = Path(tmp) / "reviewed" / "normal"
        reviewed.mkdir(parents=True)
        for index in picks:
            frame = relight(read_image(train[index]), gains, args.noise, 1000 + int(index))
            cv2.imwrite(str(reviewed / f"{train[index].stem}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        started = time.perf_counter()
        updated = update_model(model, reviewed)
        updated.save(Path(tmp) / "updated")
        update_s = time.perf_counter() - started

    rows = []
    for name, frames in [("new normal (relit test/good, unseen)", relit_good), ("original test/good", good),
                         *((f"defect {d}", frames) for d, frames in defects.items())]:
        cells = []
        for count, kinds in (flagged(m, frames) for m in (model, updated)):
            share = (len(frames) - count) / len(frames) if name.startswith("defect") else count / len(frames)
            cells.append(f"{share:.1%} {'missed' if name.startswith('defect') else 'flagged'} {kinds or ''}")
        rows.append(f"| {name} | {len(frames)} | {cells[0]} | {cells[1]} |")
    all_defects = [f for frames in defects.values() for f in frames]
    missed = [len(all_defects) - flagged(m, all_defects)[0] for m in (model, updated)]
    record = updated.info["updates"][-1]
    print(f"CPU: {cpu_name()}; load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"data: {args.data}; new lamp: RGB gains {args.shift}, sensor noise {args.noise:g} grey levels; "
          f"{args.reviewed} relit training images reviewed\n")
    print(f"{fitted}; update {update_s:.1f} s ({record['n_images']} images, bank "
          f"{record['bank_entries'][0]} -> {record['bank_entries'][1]} entries, threshold "
          f"{record['threshold'][0]:.4g} -> {record['threshold'][1]:.4g})\n")
    print("| images | n | before update | after update |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"| all defects | {len(all_defects)} | {missed[0]} missed | {missed[1]} missed |")


if __name__ == "__main__":
    main()
