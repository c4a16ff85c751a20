"""The drift monitor on real frames: false drifts over a 30-minute soak, and the time to report a lamp ramp.

    python -m bench.drift                         # bottle, default PatchCore fitted here
    python -m bench.drift --model runs/bottle-model --soaks 5

The stream is simulated, the frames are real: a model is fitted on bottle ``train/good`` and its
exported drift reference (``exporters.bundle.drift_reference``) is what a station would load.
A pool of frames is predicted once with the PyTorch model (the scores and whole-image statistics
a bundle reports, to its parity tolerance): the 20 ``test/good`` bottles, each also twice shifted
by a few pixels, so no two pool frames are alike. The monitor (station
defaults: 120-frame window, compared every 10 frames, 3 in a row) is then fed at a simulated
2 fps, exactly as ``runtime.station.inspection`` feeds it: the soak draws pool frames at random
for 30 minutes; the ramp runs 2 steady minutes, then a lamp losing ``--ramp`` of its light over
10 minutes (gain quantised in steps of 0.02, each step's frames predicted for real).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np

from bench.accuracy import cpu_name
from edge_anomaly.config import load_params
from edge_anomaly.model import TrainedModel
from edge_anomaly.training import fit_model
from exporters.bundle import drift_reference
from runtime.image_io import list_images, read_image
from runtime.manifest import DriftReference
from runtime.station.drift import DRIFT, WINDOW, DriftMonitor, Reference

REPO = Path(__file__).resolve().parents[1]

BOTTLE = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"
FPS = 2.0
Observation = tuple[float, np.ndarray]


def camera_variant(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same part placed up to 3 pixels elsewhere.

    Not sensor noise: the bottle images are noise-free, and Gaussian noise of 1 grey level
    already takes every bottle past the threshold (a fault of its own, not a drift to simulate).
    """
    dy, dx = rng.integers(-3, 4, size=2)
    return np.roll(frame, (int(dy), int(dx)), axis=(0, 1))


def observe_all(model: TrainedModel, frames: list[np.ndarray]) -> list[Observation]:
    results = [r for start in range(0, len(frames), 8) for r in model.predict(frames[start:start + 8])]
    return [(r.kind_scores["local"], r.global_stats) for r in results]


def run(monitor: DriftMonitor, stream: list[Observation]) -> tuple[list[tuple[float, str, str | None]], str]:
    """(changes as (simulated s, state, statistic), the largest share of an onset level seen and by which)."""
    changes, closest = [], (0.0, "-")
    for index, (score, stats) in enumerate(stream):
        change = monitor.observe(score, stats, index / FPS)
        if change is not None:
            moved = "+".join(name for name, _ in change.moved)
            changes.append((index / FPS, change.state, moved or None))
        if index >= WINDOW and index % monitor.every == 0:
            closest = max(closest, max((ratio, name) for name, (_, ratio) in monitor.measures().items()))
    return changes, f"{closest[0]:.2f} ({closest[1]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=BOTTLE)
    parser.add_argument("--model", type=Path, help="a model folder: loaded if it exists, else PatchCore is fitted "
                        "and saved there (default: fitted, not saved)")
    parser.add_argument("--soaks", type=int, default=3, help="30-minute soaks, each with its own random order")
    parser.add_argument("--ramp", type=float, default=0.3, help="share of the light lost over the 10-minute ramp")
    args = parser.parse_args()

    if args.model is not None and args.model.is_dir():
        model = TrainedModel.load(args.model)
    else:
        model = fit_model(args.data, *load_params("patchcore"))
        if args.model is not None:
            model.save(args.model)
    reference = Reference.from_manifest(DriftReference.model_validate(drift_reference(model)))
    rng = np.random.default_rng(0)
    good = [read_image(p) for p in list_images(args.data / "test" / "good")]
    started = time.perf_counter()
    pool_frames = good + [camera_variant(f, rng) for f in good] + [camera_variant(f, rng) for f in good]
    pool = observe_all(model, pool_frames)

    rows = []
    soak_frames = int(30 * 60 * FPS)
    for soak in range(args.soaks):
        order = np.random.default_rng(soak + 1).integers(len(pool), size=soak_frames)
        changes, closest = run(DriftMonitor(reference), [pool[i] for i in order])
        onsets = [c for c in changes if c[1] == DRIFT]
        rows.append(f"| soak {soak + 1}: unchanged frames | 30 min | {soak_frames} | {len(onsets)} | - | "
                    f"{', '.join(c[2] for c in onsets) or '-'} | {closest} |")

    steady, ramp_frames = int(2 * 60 * FPS), int(10 * 60 * FPS)
    gains = np.round((1.0 - args.ramp * np.arange(ramp_frames) / ramp_frames) / 0.02) * 0.02
    levels = {}
    for gain in np.unique(gains):
        dimmed = [np.clip(f.astype(np.float32) * gain, 0, 255).astype(np.uint8) for f in pool_frames[::3]]
        levels[float(gain)] = observe_all(model, dimmed)
    order = np.random.default_rng(99).integers(len(pool_frames[::3]), size=steady + ramp_frames)
    stream = [pool[3 * i] for i in order[:steady]] + [levels[float(g)][i] for g, i in zip(gains, order[steady:],
                                                                                          strict=True)]
    changes, _ = run(DriftMonitor(reference), stream)
    onsets = [c for c in changes if c[1] == DRIFT]
    detection = "not reported"
    if onsets:
        light = 1 - args.ramp * (onsets[0][0] * FPS - steady) / ramp_frames
        detection = f"{onsets[0][0] - steady / FPS:.0f} s (light at {light:.0%})"
    rows.append(f"| lamp ramp: -{args.ramp:.0%} over 10 min after 2 steady min | 12 min | {len(stream)} | "
                f"{len(onsets)} | {detection} | {', '.join(c[2] for c in onsets) or '-'} | - |")
    elapsed = time.perf_counter() - started

    print(f"CPU: {cpu_name()}; load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"data: {args.data}; reference: {reference.source} ({drift_reference(model)['n_scores']} held-out scores); "
          f"{len(pool)} pool frames + {sum(len(v) for v in levels.values())} ramp frames predicted in {elapsed:.0f} s; "
          f"monitor fed at a simulated {FPS:g} fps\n")
    print("| stream | simulated | frames | drift onsets | time to report | moved at onset | closest approach |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nclosest approach: the largest share of its onset level any statistic reached at a comparison (1.0 trips)")


if __name__ == "__main__":
    main()
