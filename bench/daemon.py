"""The edge daemon against a local mosquitto: trigger-to-result latency and a soak, as markdown tables.

    python bench/daemon.py                                 # latency (200 triggers) + a 2-minute soak at 20 frames/s
    python bench/daemon.py --soak-minutes 30 --fps 20      # the target soak
    python bench/daemon.py --bundle path/to/bundle.tar --triggers 500 --soak-minutes 0

Latency: a client publishes ``cmd/inspect`` and waits for the ``result`` with the same part_id,
one part at a time, like a PLC. It is compared with bare ``Detector.predict`` on the same images
in this process (daemon stopped) and, per message, with the inference time the daemon reports,
so "overhead" is everything the daemon adds: MQTT in and out, frame read, outbox, evidence.

Soak: a continuous camera replays the generated board test set (about 80% defects) at ``--fps``;
the daemon's resident memory is sampled every 5 s; at the end the daemon is stopped with SIGTERM
and every result and alert is checked for loss (gaps in ``seq``) and duplication (repeated ``id``).

Without ``--bundle`` a PatchCore model is fitted on generated boards and exported as an OpenVINO
INT8 bundle when the exporter offers it, else ONNX FP32 (the table says which). Needs the
``mosquitto`` binary. Other jobs on the same cores make the figures noisy: compare runs on a quiet box.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.detector import Detector  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402

PREFIX, STATION = "bench", "station"


def build_bundle(work: Path) -> Path:
    """PatchCore on generated boards, exported INT8 OpenVINO if available, else FP32 ONNX (cached in ``work``)."""
    for existing in ("boards-openvino-int8", "boards-onnx-fp32"):
        if (work / existing / "manifest.json").is_file():
            return work / existing
    from edge_anomaly.config import load_params
    from edge_anomaly.data.synthetic import generate_boards
    from edge_anomaly.training import fit_model
    from exporters.export import export_bundle

    boards = generate_boards(work / "boards", n_train=30, n_test_good=6, n_per_defect=3, size=(320, 256), seed=1)
    template, params = load_params("patchcore", overrides=["coreset_ratio=0.05"])
    model = fit_model(boards, template, params)
    try:
        return export_bundle(model, work / "boards-openvino-int8", fmt="openvino", precision="int8")[0]
    except (ValueError, NotImplementedError, ImportError) as exc:
        print(f"(OpenVINO INT8 export not available: {exc}; using ONNX FP32)", file=sys.stderr)
        return export_bundle(model, work / "boards-onnx-fp32")[0]


def board_images(work: Path) -> list[Path]:
    if not (work / "boards" / "test").is_dir():
        from edge_anomaly.data.synthetic import generate_boards

        generate_boards(work / "boards", n_train=30, n_test_good=6, n_per_defect=3, size=(320, 256), seed=1)
    return sorted(p for folder in (work / "boards" / "test").iterdir() for p in list_images(folder))


def percentiles(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(work: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    config = work / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
                      f"user {pwd.getpwuid(os.geteuid()).pw_name}\n")
    broker = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return broker, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


class Listener:
    """Records every message under the station with its arrival time; can wait for one."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[float, str, dict]] = []
        self.condition = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # like the daemon: no Nagle delay on small packets
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{PREFIX}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        arrived = time.perf_counter()
        with self.condition:
            self.messages.append((arrived, message.topic, json.loads(message.payload)))
            self.condition.notify_all()

    def wait(self, predicate, timeout: float = 30.0) -> tuple[float, str, dict]:
        with self.condition:
            found: list = []

            def ready() -> bool:
                found[:] = [m for m in self.messages if predicate(m[1], m[2])]
                return bool(found)

            if not self.condition.wait_for(ready, timeout):
                raise TimeoutError("no matching message")
            return found[0]

    def on(self, suffix: str) -> list[dict]:
        with self.condition:
            return [data for _, topic, data in self.messages if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_daemon(work: Path, port: int, camera: dict, name: str) -> subprocess.Popen:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = {"station": STATION, "prefix": PREFIX, "heartbeat_s": 5, "http": {"enabled": False}, "state_dir": ".",
              "mqtt": {"host": "127.0.0.1", "port": port}, "evidence": {"max_mb": 50}, "cameras": [camera]}
    (folder / "station.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen([sys.executable, "-m", "edge_anomaly", "serve", "--config", str(folder / "station.yaml")],
                            stdout=open(folder / "daemon.log", "wb"), stderr=subprocess.STDOUT, cwd=folder)


def bare_latency(bundle: Path, images: list[Path], count: int) -> list[float]:
    detector = Detector.load(bundle)
    frames = [read_image(p) for p in images]
    detector.predict(frames[:1])
    times = []
    for n in range(count):
        start = time.perf_counter()
        detector.predict([frames[n % len(frames)]])
        times.append((time.perf_counter() - start) * 1000)
    return times


def trigger_latency(work: Path, port: int, bundle: Path, images: Path, count: int) -> dict:
    daemon = start_daemon(work, port, {"name": "cam", "bundle": str(bundle), "mode": "trigger",
                                       "source": {"kind": "images", "path": str(images)}}, "trigger-station")
    listener = Listener(port)
    try:
        listener.wait(lambda topic, d: topic.endswith("/status") and d["state"] == "online"
                      and d["cameras"]["cam"]["state"] == "ok")
        end_to_end, inference, in_daemon = [], [], []
        for n in range(count + 5):  # the first 5 warm the engine up and are not counted
            part_id = f"part-{n}"
            sent = time.perf_counter()
            listener.client.publish(f"{PREFIX}/{STATION}/cmd/inspect", json.dumps({"part_id": part_id}), qos=1)
            arrived, _, result = listener.wait(lambda topic, d, p=part_id: topic.endswith("/result")
                                               and d["part_id"] == p)
            if n >= 5:
                end_to_end.append((arrived - sent) * 1000)
                inference.append(result["latency_ms"]["inference"])
                in_daemon.append(result["latency_ms"]["total"])
        return {"end_to_end": end_to_end, "inference": inference, "in_daemon": in_daemon,
                "overhead": [e - i for e, i in zip(end_to_end, inference, strict=True)]}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        listener.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def soak(work: Path, port: int, bundle: Path, images: Path, minutes: float, fps: float) -> dict:
    daemon = start_daemon(work, port, {"name": "cam", "bundle": str(bundle), "mode": "continuous", "rate_hz": fps,
                                       "source": {"kind": "images", "path": str(images)}}, "soak-station")
    listener = Listener(port)
    samples: list[tuple[float, float]] = []
    try:
        listener.wait(lambda topic, d: topic.endswith("/status") and d["state"] == "online"
                      and d["cameras"]["cam"]["state"] == "ok")
        start = time.monotonic()
        while time.monotonic() - start < minutes * 60:
            samples.append((time.monotonic() - start, rss_mb(daemon.pid)))
            time.sleep(5)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=120)
        elapsed = time.monotonic() - start
        _, _, final = listener.wait(lambda topic, d: topic.endswith("/heartbeat") and
                                    d["cameras"]["cam"]["state"] == "stopped")
        time.sleep(1.0)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        listener.close()
    alerts, results = listener.on("/cam/alert"), listener.on("/cam/result")
    seqs = sorted({m["seq"] for m in alerts + results})
    # growth: the last fifth of the run against the first sample after a fifth (engine and caches warm)
    values = [rss for at, rss in samples]
    fifth = max(1, len(values) // 5)
    baseline, last = float(np.median(values[fifth:2 * fifth])), float(np.median(values[-fifth:]))
    return {
        "minutes": elapsed / 60, "exit_code": code, "frames": final["frames"], "fps": final["frames"] / elapsed,
        "anomalies": final["anomalies"], "alerts_received": len({m["id"] for m in alerts}),
        "alerts_duplicated": len(alerts) - len({m["id"] for m in alerts}),
        "results_received": len({m["id"] for m in results}),
        "seq_gaps": (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,
        "outbox_left": final["outbox"]["pending"], "dropped_results": final["outbox"]["dropped_results"],
        "rss_start_mb": baseline, "rss_end_mb": last, "rss_max_mb": max(values),
        "rss_growth_pct": 100 * (last - baseline) / baseline, "latency_ms": final["cameras"]["cam"]["latency_ms"],
        "inference_ms": final["cameras"]["cam"]["inference_ms"],
    }


def print_soak(soak: dict, fps: float) -> None:
    rows = [
        ("frames inspected (rate reached)", f"{soak['frames']:,} ({soak['fps']:.1f}/s)"),
        ("alerts produced / received / duplicated",
         f"{soak['anomalies']:,} / {soak['alerts_received']:,} / {soak['alerts_duplicated']}"),
        ("results produced / received; gaps in seq", f"{soak['frames']:,} / {soak['results_received']:,}; "
                                                     f"{soak['seq_gaps']}"),
        ("outbox left after SIGTERM; results dropped", f"{soak['outbox_left']}; {soak['dropped_results']}"),
        ("resident memory after warm-up -> end (max)", f"{soak['rss_start_mb']:.1f} -> {soak['rss_end_mb']:.1f} MB "
                                                       f"({soak['rss_max_mb']:.1f}), {soak['rss_growth_pct']:+.2f}%"),
        ("frame read -> result queued, p50 / p95 ms (last 1000)",
         f"{soak['latency_ms']['p50']} / {soak['latency_ms']['p95']}"),
        ("of which inference, p50 / p95 ms", f"{soak['inference_ms']['p50']} / {soak['inference_ms']['p95']}"),
        ("exit status after SIGTERM", str(soak["exit_code"])),
    ]
    print(f"| soak: {soak['minutes']:.1f} min at {fps:g} frames/s | |\n| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder or .tar (default: fit and export one on generated boards)")
    parser.add_argument("--work", default="/tmp/edge-anomaly-bench-daemon", help="scratch folder (cached bundle)")
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--soak-minutes", type=float, default=2.0, help="0 skips the soak (target: 30)")
    parser.add_argument("--fps", type=float, default=20.0, help="soak frame rate (target: 20)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle) if args.bundle else build_bundle(work)
    replay = work / "replay"
    shutil.rmtree(replay, ignore_errors=True)
    replay.mkdir()
    for path in board_images(work):
        shutil.copyfile(path, replay / f"{path.parent.name}_{path.name}")
    images = list_images(replay)
    engine = Detector.load(bundle).bundle.engine
    print(f"bundle {bundle} ({engine['format']} {engine['precision']}), {len(images)} replayed images "
          f"{read_image(images[0]).shape[1]}x{read_image(images[0]).shape[0]}, {os.cpu_count()} CPU cores\n")

    broker, port = start_broker(work)
    figures: dict = {"bundle": str(bundle), "engine": f"{engine['format']} {engine['precision']}"}
    try:
        bare = bare_latency(bundle, images, args.triggers)
        triggered = trigger_latency(work, port, bundle, replay, args.triggers)
        rows = [("bare Detector.predict (this process, daemon stopped)", bare),
                ("daemon: inference reported in the result", triggered["inference"]),
                ("daemon: trigger received -> result queued in the outbox", triggered["in_daemon"]),
                ("daemon: trigger published -> result received", triggered["end_to_end"]),
                ("daemon overhead (per message: end to end - inference)", triggered["overhead"])]
        print(f"| trigger latency, {args.triggers} parts one at a time | p50 ms | p95 ms |\n| --- | --- | --- |")
        for label, values in rows:
            print(f"| {label} | {percentiles(values)[0]:.1f} | {percentiles(values)[1]:.1f} |")
        above = percentiles(triggered["end_to_end"])[1] - percentiles(bare)[1]
        print(f"\np95 trigger->result above p95 bare inference: {above:.1f} ms (target < 50 ms)\n")
        figures["latency"] = {label: dict(zip(("p50", "p95"), percentiles(values), strict=True))
                              for label, values in rows} | {"p95_above_bare_ms": above}
        if args.soak_minutes > 0:
            result = soak(work, port, bundle, replay, args.soak_minutes, args.fps)
            figures["soak"] = result
            print_soak(result, args.fps)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
