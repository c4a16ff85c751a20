"""What the station sends out, in one place: every message an inspection, a review or a command answer makes goes
into the outbox here (in ``seq`` order, surviving a crash or a broker outage), status and heartbeat go straight to
the broker, and every inspection and every trigger answered with an error is also told to the station's other
communicators (the page, the OPC UA server) that registered for it.

Topics and payloads are :mod:`runtime.station.messages`' (the MQTT contract); this module only decides when each
is sent and through which path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from runtime.station.messages import (
    BundleInfo,
    Inspection,
    Topics,
    alert_message,
    drift_message,
    error_message,
    result_message,
)
from runtime.station.outbox import ALERT, ERROR, RESULT, REVIEW, Outbox
from runtime.station.stats import StationStats

if TYPE_CHECKING:
    from runtime.station.mqtt import MqttLink

log = logging.getLogger(__name__)

InspectionObserver = Callable[[Inspection, np.ndarray], None]
TriggerErrorObserver = Callable[[int | None, str, str], None]  # (the trigger's outbox row, camera, error)


@dataclass
class Publisher:
    station: str
    topics: Topics
    outbox: Outbox
    stats: StationStats
    link: MqttLink | None = None  # attached once built: the link needs the command handler first
    inspection_observers: list[InspectionObserver] = field(default_factory=list)
    trigger_error_observers: list[TriggerErrorObserver] = field(default_factory=list)

    def attach(self, link: MqttLink) -> None:
        """The MQTT link that delivers the outbox; its and the outbox's figures become Prometheus gauges."""
        self.link = link
        gauge, outbox = self.stats.gauge, self.outbox
        gauge("edge_anomaly_outbox_pending", "Messages awaiting broker acknowledgement", outbox.pending)
        gauge("edge_anomaly_outbox_dropped_results", "Results dropped from a full outbox since start",
              lambda: outbox.dropped_results)
        gauge("edge_anomaly_mqtt_connected", "1 while connected to the broker", lambda: float(link.connected))
        gauge("edge_anomaly_mqtt_delivered", "Outbox messages acknowledged by the broker since start",
              lambda: link.delivered)
        gauge("edge_anomaly_outbox_write_failures", "Outbox writes that failed (disk full) and were retried",
              lambda: outbox.write_failures)
        gauge("edge_anomaly_outbox_held", "Messages held in memory until the outbox can be written",
              lambda: outbox.held)

    def notify(self) -> None:
        """Wake the sender: something is waiting in the outbox."""
        if self.link is not None:
            self.link.notify()

    # -- an inspection ------------------------------------------------------------------------------

    def inspection(self, inspection: Inspection, thumbnail: np.ndarray | None, jpeg_quality: int) -> None:
        """The result (answering its trigger, if any) and, for an anomaly, the alert first: a station killed in
        between has answered the trigger anyway."""
        camera = inspection.camera
        if inspection.result.is_anomalous:
            self.outbox.put(ALERT, self.topics.alert(camera), alert_message(inspection, thumbnail, jpeg_quality))
        self.outbox.put(RESULT, self.topics.result(camera), result_message(inspection), answers=inspection.trigger)
        self.notify()

    def drift(self, camera: str, change: dict, bundle: BundleInfo) -> None:
        self.outbox.put(ALERT, self.topics.drift(camera), drift_message(self.station, camera, change, bundle))
        self.notify()

    def observed(self, inspection: Inspection, frame: np.ndarray) -> None:
        """Every inspection, after its messages are in the outbox: the page's history, the OPC UA server."""
        for observer in self.inspection_observers:
            observer(inspection, frame)

    def review(self, camera: str, message: dict) -> None:
        self.outbox.put(REVIEW, self.topics.review(camera), message)
        self.notify()

    # -- answers to commands ------------------------------------------------------------------------

    def accept_trigger(self, camera: str, part_id: str) -> int:
        """Record an accepted trigger in the outbox; returns its row, which its answer names and deletes."""
        return self.outbox.accept_trigger(camera, part_id)

    def command_error(self, command: str, error: str, payload: bytes = b"", **fields: object) -> None:
        """Answer on ``cmd/error`` through the outbox: in order with results, and delivered at a stop too."""
        self.stats.command_error()
        log.warning("command %s refused: %s", command[:64], error[:1000], extra={"command": command[:64], **fields})
        self.outbox.put(ERROR, self.topics.command_error, error_message(command, error, payload, **fields))
        self.notify()

    def trigger_error(self, part_id: str, row: int | None, camera: str, error: str) -> None:
        """An accepted trigger's answer when it cannot be inspected: through the outbox (it survives a stop)."""
        self.stats.command_error()
        log.warning("trigger %s on camera %s answered with an error: %s", part_id, camera, error,
                    extra={"part_id": part_id, "camera": camera})
        self.outbox.put(ERROR, self.topics.command_error, error_message("inspect", error, part_id=part_id,
                                                                        camera=camera), answers=row)
        self.notify()
        for observer in self.trigger_error_observers:
            observer(row, camera, error)

    def answer_unanswered_triggers(self) -> None:
        """Triggers an earlier run accepted but never answered (it was killed): say so, naming each part."""
        for row, camera, part_id in self.outbox.unanswered_triggers():
            log.warning("trigger %s on camera %s was accepted by the previous run and never answered", part_id,
                        camera, extra={"part_id": part_id, "camera": camera})
            self.outbox.put(ERROR, self.topics.command_error, error_message(
                "inspect", "the station stopped (killed or crashed) before answering this trigger; inspect the part "
                "again", part_id=part_id, camera=camera), answers=row)

    # -- straight to the broker ---------------------------------------------------------------------

    def heartbeat(self, message: dict) -> None:
        self.link.publish_now(self.topics.heartbeat, message)

    def status_changed(self) -> None:
        """A camera's state or bundle changed: the retained status message is published again."""
        if self.link is not None:
            self.link.publish_status()
