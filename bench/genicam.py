"""A GigE Vision camera at a line camera's size and rate, and a software-triggered station, as markdown tables.

    python -m bench.genicam                       # 1280x1024 Mono8 at 30 frames/s for 2 minutes; 10 Hz triggers 1 min
    python -m bench.genicam --minutes 0.5 --trigger-seconds 20

Stream: Debian's fake camera (``arv-fake-gv-camera-0.8``, a real GVSP stream on 127.0.0.1) free-runs at ``--fps``;
the GenICam source (runtime/genicam.py) reads it without dropping anything on purpose. "Sent" is the span of the
camera's own frame ids over the run, "received" what arrived complete; missing and resent packets are the stream's.

Triggered inspection: a station with that camera in trigger mode (``trigger: software``: one exposure per trigger)
and a paho client publishing ``cmd/inspect`` at ``--trigger-hz``; every trigger must be answered once, by a result
or an error, and the table says how long each took. Needs Aravis with PyGObject, aravis-tools and mosquitto.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from bench.daemon import build_bundle, cpu_model, percentiles
from runtime.genicam import GenicamSettings, GenicamSource
from runtime.sources import Frame
from tests.harness.fake_camera import FakeCamera
from tests.harness.station import Broker, DaemonProcess, Probe, station_config

SIZE = (0, 0, 1280, 1024)


def stream(camera: FakeCamera, minutes: float, fps: float) -> dict:
    settings = GenicamSettings(camera=camera.serial, frame_rate=fps, roi=SIZE, pixel_format="Mono8")
    source = GenicamSource(settings)
    last = None
    sent = received = 0
    try:
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:  # pop every buffer in order: nothing is drained on purpose
            buffer = source._stream.timeout_pop_buffer(int(settings.timeout_s * 1e6))
            if buffer is None:
                continue
            try:
                frame = source._frame(buffer)
            finally:
                source._stream.push_buffer(buffer)
            if not isinstance(frame, Frame):  # incomplete (counted in the status) or dropped by the rate
                continue
            frame_id = frame.camera_frame["frame_id"]
            if last is not None:  # GigE Vision 1.x block ids are 16 bits and skip 0 when they wrap
                sent += frame_id - last if frame_id > last else frame_id + 0xFFFF - last
            else:
                sent = 1
            last = frame_id
            received += 1
        source._count_packets()
    finally:
        source.close()
    status = source.status
    return {"sent": sent, "received": received,
            "incomplete": status.incomplete_frames, "missing_packets": status.missing_packets,
            "resent_packets": status.resent_packets, "seconds": minutes * 60}


def triggered(camera: FakeCamera, work: Path, bundle: Path, seconds: float, hz: float, evidence: str) -> dict:
    broker = Broker(work / "broker")
    broker.start()
    folder = work / "genicam-station"
    shutil.rmtree(folder, ignore_errors=True)
    source = {"kind": "genicam", "reopen": {"min_s": 0.2, "max_s": 1},
              "genicam": {"camera": camera.serial, "trigger": "software", "roi": list(SIZE), "pixel_format": "Mono8"}}
    config = station_config(broker.port, [{"name": "cam", "bundle": str(bundle), "mode": "trigger", "source": source}],
                            heartbeat_s=5, evidence={"save": evidence})
    daemon = DaemonProcess(folder, config).start()
    probe = Probe(broker.port)
    sent: dict[str, float] = {}
    try:
        probe.wait_for("/status", lambda d: d["state"] == "online" and d["cameras"]["cam"]["state"] == "ok",
                       timeout=120)
        for n in range(10):  # warm-up
            probe.publish("cmd/inspect", {"part_id": f"warm-{n}"})
        probe.wait_for("/cam/result", lambda d: d["part_id"].startswith("warm-"), count=10, timeout=60)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            due = start + n / hz
            time.sleep(max(0.0, due - time.monotonic()))
            part = f"T-{n}"
            sent[part] = time.time()
            probe.publish("cmd/inspect", {"part_id": part})
            n += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_answers(probe, sent)) < len(sent):
            time.sleep(0.2)
        answers = _answers(probe, sent)
    finally:
        daemon.stop()
        probe.close()
        broker.stop()
    results = [message for message in answers.values() if message.topic.endswith("/result")]
    latencies = [(message.at - sent[message.data["part_id"]]) * 1000 for message in results]
    counts: dict[str, int] = {}
    for message in probe.on("/cam/result") + probe.on("/cmd/error"):
        part = (message.data or {}).get("part_id")
        if part in sent:
            counts[part] = counts.get(part, 0) + 1
    return {"triggers": len(sent), "results": sum(m.topic.endswith("/result") for m in answers.values()),
            "errors": sum(m.topic.endswith("/error") for m in answers.values()),
            "unanswered": len(sent) - len(answers), "answered_twice": sum(c > 1 for c in counts.values()),
            "latency": latencies, "inference": [m.data["latency_ms"]["inference"] for m in results],
            "in_station": [m.data["latency_ms"]["total"] for m in results],
            "anomalous": sum(m.data["label"] == "anomalous" for m in results)}


def _answers(probe: Probe, sent: dict[str, float]) -> dict:
    answers = {}
    for message in probe.on("/cam/result") + probe.on("/cmd/error"):
        part = (message.data or {}).get("part_id")
        if part in sent and part not in answers:
            answers[part] = message
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="free-run stream length")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--trigger-seconds", type=float, default=60.0)
    parser.add_argument("--trigger-hz", type=float, default=10.0)
    parser.add_argument("--evidence", default="anomalous", choices=("anomalous", "all", "none"),
                        help="the station's evidence.save (the fake camera's test pattern is anomalous to the boards)")
    parser.add_argument("--bundle", help="bundle (default: bench/daemon.py's generated boards bundle)")
    parser.add_argument("--work", default="/tmp/edge-anomaly-bench-daemon")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPU cores ({cpu_model()}), load average {os.getloadavg()[0]:.2f}\n")
    camera = FakeCamera().start()
    try:
        if args.minutes > 0:
            figures = stream(camera, args.minutes, args.fps)
            print(f"| fake GigE camera, {SIZE[2]}x{SIZE[3]} Mono8 at {args.fps:g} frames/s, {args.minutes:g} min | |\n"
                  "| --- | --- |")
            print(f"| frames sent (camera frame ids) / received complete | {figures['sent']:,} / "
                  f"{figures['received']:,} ({100 * figures['received'] / max(1, figures['sent']):.2f}%) |")
            print(f"| rate received | {figures['received'] / figures['seconds']:.2f} frames/s |")
            print(f"| incomplete frames; missing / resent packets | {figures['incomplete']}; "
                  f"{figures['missing_packets']} / {figures['resent_packets']} |\n")
        if args.trigger_seconds > 0:
            bundle = Path(args.bundle) if args.bundle else build_bundle(work)
            figures = triggered(camera, work, bundle, args.trigger_seconds, args.trigger_hz, args.evidence)
            p50, p95 = percentiles(figures["latency"]) if figures["latency"] else (float("nan"),) * 2
            print(f"| station, software trigger at {args.trigger_hz:g} Hz for {args.trigger_seconds:g} s, evidence "
                  f"{args.evidence} | |\n"
                  "| --- | --- |")
            print(f"| triggers / results / errors | {figures['triggers']} / {figures['results']} / "
                  f"{figures['errors']} |")
            print(f"| unanswered / answered twice | {figures['unanswered']} / {figures['answered_twice']} |")
            print(f"| cmd/inspect published -> result received, p50 / p95 / max ms | {p50:.1f} / {p95:.1f} / "
                  f"{max(figures['latency'], default=float('nan')):.1f} |")
            for label, key in (("of which: trigger received -> result queued (in the station)", "in_station"),
                               ("of which: inference", "inference")):
                values = figures[key]
                p50, p95 = percentiles(values) if values else (float("nan"),) * 2
                print(f"| {label}, p50 / p95 ms | {p50:.1f} / {p95:.1f} |")
            print(f"| results anomalous (the fake pattern is not a board) | {figures['anomalous']} |")
            print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        camera.kill()


if __name__ == "__main__":
    main()
