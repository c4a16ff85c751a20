"""GigE Vision and USB3 Vision cameras through Aravis (GenICam): a frame source like :mod:`runtime.sources`' ones.

Optional like every engine: Aravis comes from Debian's ``gir1.2-aravis-0.8`` with PyGObject (the board installer
installs both; in a pip virtual environment on Debian 12 ``PyGObject<3.51`` builds against
``libgirepository1.0-dev`` and ``libcairo2-dev``). A box without them runs everything else; opening a
``genicam`` source there raises :class:`SourceError` saying what to install.

The camera is chosen by serial number, user id, device id or address (the first one found when none is named);
pixel format, exposure, gain, frame rate and the sensor region are set from the settings before acquisition starts.
``trigger: software`` fires ``TriggerSoftware`` for each frame read (the station's trigger mode: one exposure per
trigger); ``trigger: Line0`` (any line) waits for the frame a hardware trigger exposed; ``off`` runs free. Each frame
carries the camera's frame id and timestamp; lost and resent packets are counted in the status. A camera that stops
delivering raises :class:`SourceError`, and the station's worker reopens it with its back-off.

A frame Aravis hands over incomplete (buffer status not ``SUCCESS``: packets lost on the wire, never resent) is never
delivered: it is counted (``incomplete_frames``) and logged with the camera and the Aravis status. A software-triggered
shot is triggered again, up to ``retries`` times; a free run takes the next frame, giving up after ``retries + 1``
in a row; a hardware-triggered shot cannot be exposed again. Then :meth:`GenicamSource.read` raises
:class:`ImageReadError` (one bad shot: the station answers the trigger with the error, the camera stays open).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.image_io import ImageReadError
from runtime.sources import Frame, FrameRate, SourceError, SourceStatus

log = logging.getLogger(__name__)

BUFFERS = 8  # buffers queued to the stream: a few frames of slack, bounded memory
# GenICam pixel formats -> how to make RGB of them. OpenCV names a Bayer pattern by its second row, so the camera's
# RGGB (BayerRG8) is OpenCV's BG (checked by tests/runtime/test_genicam.py on a synthetic mosaic).
CONVERSIONS = {
    "Mono8": cv2.COLOR_GRAY2RGB,
    "RGB8": None,
    "BayerRG8": cv2.COLOR_BayerBG2RGB,
    "BayerGR8": cv2.COLOR_BayerGB2RGB,
    "BayerBG8": cv2.COLOR_BayerRG2RGB,
    "BayerGB8": cv2.COLOR_BayerGR2RGB,
}


@dataclass(frozen=True)
class GenicamSettings:
    """A GenICam camera's settings (``source: {kind: genicam, genicam: {...}}`` in station.yaml)."""

    __pydantic_config__ = {"extra": "forbid"}  # validated as it is by the station's config

    camera: str | None = None  # serial number, user id, device id or address; None: the first camera found
    pixel_format: str = "Mono8"
    exposure_us: float | None = None
    gain_db: float | None = None
    frame_rate: float | None = None
    roi: tuple[int, int, int, int] | None = None  # sensor region: x, y, width, height
    trigger: str = "off"  # off | software | Line0, Line1, ... (hardware)
    timeout_s: float = 2.0  # no frame this long: the camera is lost
    retries: int = 2  # an incomplete frame: a software trigger fired again this often (free run: skipped in a row)

    def __post_init__(self) -> None:
        if self.pixel_format not in CONVERSIONS:
            raise ValueError(f"pixel_format {self.pixel_format!r} is not one of {', '.join(CONVERSIONS)}")
        if self.trigger != "off" and self.trigger != "software" and not self.trigger.startswith("Line"):
            raise ValueError(f"trigger {self.trigger!r} must be off, software or a line (Line0, Line1, ...)")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.roi is not None and (min(self.roi[:2]) < 0 or min(self.roi[2:]) <= 0):
            raise ValueError(f"roi {list(self.roi)} must be [x >= 0, y >= 0, width > 0, height > 0]")


@dataclass
class GenicamStatus(SourceStatus):
    """A source's status plus what the camera's stream counted (GigE Vision packets)."""

    camera: str | None = None
    missing_packets: int = 0
    resent_packets: int = 0
    incomplete_frames: int = 0  # buffers Aravis handed over not SUCCESS: skipped, never delivered
    retriggers: int = 0  # software triggers fired again after an incomplete frame
    failed_shots: int = 0  # reads that raised ImageReadError: every attempt incomplete


def _aravis():
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise SourceError(f"genicam sources need Aravis with PyGObject (apt-get install gir1.2-aravis-0.8 and "
                          f"python3-gi, or pip install 'PyGObject<3.51' in a venv): {exc}") from None
    return Aravis


def find_camera(Aravis, wanted: str | None) -> str | None:
    """The device id of the camera named by serial, user id, device id or address (None: the first one)."""
    Aravis.update_device_list()
    devices = [(Aravis.get_device_id(i), Aravis.get_device_serial_nbr(i), Aravis.get_device_address(i))
               for i in range(Aravis.get_n_devices())]
    if not devices:
        raise SourceError("no GenICam camera found (GigE Vision on this host's networks, or USB3 Vision)")
    if wanted is None:
        return devices[0][0]
    for device_id, serial, address in devices:
        if wanted in (device_id, serial, address):
            return device_id
    return wanted  # maybe its user id: Aravis.Camera.new resolves that, or fails naming it


class GenicamSource:
    """Frames from one GenICam camera, pulled one at a time with :meth:`read` (the station's workers do)."""

    kind = "genicam"  # a runtime.sources.Source: uncompressed frames, a camera that is reopened, never ends
    compressed = ends = restarts_at_end = False

    def __init__(self, settings: GenicamSettings, *, every_nth: int = 1, max_fps: float | None = None) -> None:
        self.settings = settings
        self.rate = FrameRate(every_nth, max_fps)
        self.name = f"genicam:{settings.camera or 'first'}"
        self.status = GenicamStatus(self.name)
        self._closed = threading.Event()
        Aravis = _aravis()
        self._Aravis = Aravis
        try:
            device = find_camera(Aravis, settings.camera)
            self._camera = Aravis.Camera.new(device)
            self._configure()
            self._stream = self._camera.create_stream(None, None)
            payload = self._camera.get_payload()
            for _ in range(BUFFERS):
                self._stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            self._camera.start_acquisition()
        except SourceError:
            raise
        except Exception as exc:  # GLib.Error: camera gone, busy, or a setting it refuses
            self.status.state, self.status.last_error = "failed", str(exc)
            raise SourceError(f"{self.name}: cannot open: {exc}") from None
        self.status.camera = f"{self._camera.get_vendor_name()} {self._camera.get_model_name()} " \
                             f"{self._camera.get_device_serial_number()}"
        self.status.state = "open"
        log.info("%s: %s open, %s, trigger %s", self.name, self.status.camera, settings.pixel_format, settings.trigger)

    def _configure(self) -> None:
        camera, settings = self._camera, self.settings
        camera.set_pixel_format_from_string(settings.pixel_format)
        if settings.roi is not None:
            camera.set_region(*settings.roi)
        if settings.frame_rate is not None:
            camera.set_frame_rate(settings.frame_rate)
        if settings.exposure_us is not None:
            camera.set_exposure_time(settings.exposure_us)
        if settings.gain_db is not None:
            camera.set_gain(settings.gain_db)
        if settings.trigger == "off":
            camera.clear_triggers()
        else:
            camera.set_trigger(settings.trigger if settings.trigger != "software" else "Software")

    def read(self) -> Frame:
        """The next frame: after a software trigger (``trigger: software``), the next exposed one (a line), or the
        newest (free run; older queued frames are dropped, a trigger must see the part in front of it now).
        Raises :class:`SourceError` when no frame comes within ``timeout_s``, :class:`ImageReadError` when the
        frames came incomplete ``retries + 1`` times (a line: once)."""
        try:
            return self._read()
        except (SourceError, ImageReadError):
            raise
        except Exception as exc:  # GLib.Error: the camera stopped answering its control channel
            raise SourceError(f"{self.name}: {exc}") from None

    def _read(self) -> Frame:
        timeout_us = int(self.settings.timeout_s * 1e6)
        software = self.settings.trigger == "software"
        attempts = 1 + self.settings.retries if software or self.settings.trigger == "off" else 1
        incomplete: list[str] = []  # this read's incomplete frames (Aravis status), for the error
        if self.settings.trigger == "off" or software:
            self._drain()
        if software:
            self._camera.software_trigger()
        while not self._closed.is_set():
            buffer = self._stream.timeout_pop_buffer(timeout_us)
            if buffer is None:
                self._count_packets()
                raise SourceError(f"{self.name}: no frame within {self.settings.timeout_s:.1f} s (camera lost?)")
            try:
                frame = self._frame(buffer)
            finally:
                self._stream.push_buffer(buffer)
            if isinstance(frame, Frame):
                return frame
            if frame is None:
                continue  # dropped on purpose by every_nth / max_fps
            incomplete.append(frame)
            if len(incomplete) == attempts:
                self.status.failed_shots += 1
                again = f" after {self.settings.retries} retrigger(s)" if software else ""
                self.status.last_error = (f"{self.name}: no complete frame{again}: {len(incomplete)} in a row "
                                          f"incomplete (Aravis status {', '.join(incomplete)})")
                raise ImageReadError(self.status.last_error)
            if software:
                self.status.retriggers += 1
                self._camera.software_trigger()
        raise SourceError(f"{self.name}: closed")

    def _drain(self) -> None:
        """Drop the frames queued before this read (counted as skipped, or as incomplete when they were)."""
        while (buffer := self._stream.try_pop_buffer()) is not None:
            if buffer.get_status() == self._Aravis.BufferStatus.SUCCESS:
                self.status.skipped += 1
            else:
                self._incomplete(buffer)
            self._stream.push_buffer(buffer)

    def _incomplete(self, buffer) -> str:
        """Count and log a buffer Aravis handed over incomplete; its Aravis status (``timeout``, ``missing-packets``)"""
        self._count_packets()
        self.status.incomplete_frames += 1
        nick = buffer.get_status().value_nick
        self.status.skip_corrupt(f"{self.name} ({self.status.camera}) frame {buffer.get_frame_id()} incomplete: "
                                 f"Aravis status {nick}, {self.status.missing_packets} packets missing so far")
        return nick

    def _frame(self, buffer) -> Frame | str | None:
        """The buffer's frame; its Aravis status when it is incomplete; None when the rate drops it."""
        if buffer.get_status() != self._Aravis.BufferStatus.SUCCESS:
            return self._incomplete(buffer)
        self._count_packets()
        frame_id = buffer.get_frame_id()
        if not self.rate.keep(self.status.frames + self.status.skipped, buffer.get_system_timestamp() / 1e9):
            self.status.skipped += 1
            return None
        width, height = buffer.get_image_width(), buffer.get_image_height()
        data = np.frombuffer(buffer.get_image_data(), dtype=np.uint8)
        conversion = CONVERSIONS[self.settings.pixel_format]
        channels = 3 if conversion is None else 1
        if data.size < width * height * channels:
            self.status.skip_corrupt(f"{self.name} frame {frame_id}: {data.size} bytes for {width}x{height}")
            return f"success but {data.size} bytes for {width}x{height}"
        image = data[:width * height * channels].reshape(height, width, channels) if channels == 3 else \
            data[:width * height].reshape(height, width)
        image = image.copy() if conversion is None else cv2.cvtColor(image, conversion)
        self.status.frames += 1
        return Frame(self.name, frame_id, image, self.settings.frame_rate or None,
                     camera_frame={"frame_id": int(frame_id), "timestamp_ns": int(buffer.get_timestamp())})

    def _count_packets(self) -> None:
        resent, missing = self._stream.get_statistics()
        self.status.resent_packets, self.status.missing_packets = int(resent), int(missing)

    def close(self) -> None:
        """Stop acquisition and release the camera (safe to call twice)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._camera.stop_acquisition()
        except Exception as exc:  # the camera is gone already
            log.debug("%s: stop_acquisition: %s", self.name, exc)
        self._stream = None
        self._camera = None
        self.status.state = "ended"
