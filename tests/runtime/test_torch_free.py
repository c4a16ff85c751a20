"""The edge path (``edge-anomaly predict`` and ``bench`` on a bundle) runs where torch cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs in a fresh interpreter: any import of torch (or of the training modules that need it) raises,
# as it would on an edge box without torch; afterwards the loaded modules are listed.
_WITHOUT_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "sklearn", "safetensors"):
            raise ImportError(f"{name} is not installed on this edge box")
        return None

sys.meta_path.insert(0, NoTorch())
from edge_anomaly.cli import main
codes = [main(args) for args in json.loads(sys.argv[1])]
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "sklearn", "safetensors", "matplotlib"})
training = sorted(m for m in sys.modules if m.startswith("edge_anomaly.") and m not in
                  ("edge_anomaly.cli", "edge_anomaly.progress"))
print("RESULT", json.dumps({"codes": codes, "loaded": loaded, "training": training}))
"""


def test_predict_and_bench_run_without_torch(board_bundle, boards, tmp_path):
    bundle_folder, bundle_tar = board_bundle
    image = sorted((boards / "test" / "scratch").glob("*.png"))[0]
    commands = [["predict", str(bundle_tar), str(image), str(boards / "test" / "good"), "--out", str(tmp_path)],
                ["bench", str(bundle_folder), "--frames", "3", "--warmup", "1", "--json"]]
    run = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, json.dumps(commands)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert report == {"codes": [0, 0], "loaded": [], "training": []}
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1 + len(list((boards / "test" / "good").glob("*.png")))
    assert rows[0]["label"] == "anomalous" and all(0 <= row["confidence"] <= 1 for row in rows)
    figures = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert {"latency_ms_median", "latency_ms_p95", "throughput_fps", "peak_rss_mb"} <= figures.keys()
    assert figures["throughput_fps"] > 0 and figures["peak_rss_mb"] > 0
