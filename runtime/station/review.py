"""A person's verdict on an inspection: stored, published on ``<base>/<camera>/review``, and its frame filed
for retraining.

Reviewed frames are copied into ``<state_dir>/reviewed/<camera>/normal/`` or ``.../defect/`` as ``<inspection>.jpg``
(or ``.png`` when written from memory), the
folders ``edge-anomaly update MODEL --add DIR`` takes; a second review of the same inspection moves
the file, so each frame lies in the folder of its latest verdict. The frame comes from the evidence
(the raw frame beside the overlay) or, for the camera's latest inspection, from memory; an inspection
without either (a normal verdict whose evidence was not kept) is reviewed without a frame.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from runtime.image_io import write_image
from runtime.station.evidence import frame_path
from runtime.station.history import VERDICTS, History
from runtime.station.live import LiveFeed
from runtime.station.messages import Topics, iso_time, review_message
from runtime.station.outbox import REVIEW, Outbox

log = logging.getLogger(__name__)


class ReviewError(ValueError):
    """A review that cannot be taken; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Reviews:
    def __init__(self, station: str, folder: Path, history: History, outbox: Outbox, topics: Topics,
                 notify: Callable[[], None], live: LiveFeed) -> None:
        self.station = station
        self.folder = folder
        self.history = history
        self.outbox = outbox
        self.topics = topics
        self.notify = notify
        self.live = live

    def review(self, inspection_id: str, verdict: str, reviewer: str, note: str | None = None) -> dict:
        if verdict not in VERDICTS:
            raise ReviewError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict[:40]!r}", 400)
        inspection = self.history.get(inspection_id)
        if inspection is None:
            raise ReviewError(f"no inspection {inspection_id[:64]!r} in the history (unknown or pruned)", 404)
        moment = time.time()
        copy = self._file_frame(inspection, verdict)
        review = self.history.add_review(inspection_id, inspection["camera"], verdict, reviewer, moment, note,
                                         str(copy) if copy else None)
        message = review_message(self.station, inspection, review)
        self.outbox.put(REVIEW, self.topics.review(inspection["camera"]), message)
        self.notify()
        self.live.publish("review", {"id": inspection_id, "camera": inspection["camera"], "verdict": verdict,
                                     "reviewer": reviewer, "timestamp": iso_time(moment)})
        log.info("inspection %s on camera %s reviewed as %s by %s", inspection_id, inspection["camera"], verdict,
                 reviewer, extra={"camera": inspection["camera"], "inspection": inspection_id, "verdict": verdict,
                                  "reviewer": reviewer})
        return {**review, "inspection": inspection_id, "camera": inspection["camera"]}

    def _file_frame(self, inspection: dict, verdict: str) -> Path | None:
        """Put the raw frame into ``reviewed/<camera>/<verdict>/<id>.<jpg|png>``; None when no frame is left."""
        camera, inspection_id = inspection["camera"], inspection["id"]
        folder = self.folder / camera / verdict
        folder.mkdir(parents=True, exist_ok=True)
        for other in VERDICTS:  # a second review moves the frame to its new verdict (or finds it already there)
            for earlier in sorted((self.folder / camera / other).glob(f"{inspection_id}.*")):
                target = folder / earlier.name
                if earlier != target:
                    earlier.replace(target)
                return target
        source = frame_path(inspection["overlay"]) if inspection["overlay"] else None
        if source is not None and source.is_file():
            target = folder / f"{inspection_id}.jpg"
            shutil.copyfile(source, target)
            return target
        latest = self.live.latest_frame(camera)
        if latest is not None and latest[0] == inspection_id:
            target = folder / f"{inspection_id}.png"
            write_image(target, latest[1])
            return target
        log.warning("inspection %s reviewed without a frame: its evidence was not kept (evidence.save: all keeps "
                    "every frame)", inspection_id, extra={"camera": camera, "inspection": inspection_id})
        return None
