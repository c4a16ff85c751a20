"""A person's verdict on an inspection: stored, published on ``<base>/<camera>/review``, and its frame filed
for retraining.

Reviewed frames are copied into ``<state_dir>/reviewed/<camera>/normal/`` or ``.../defect/`` as ``<inspection>.jpg``
(or ``.png`` when written from memory), the
folders ``edge-anomaly update MODEL --add DIR`` takes; a second review of the same inspection moves
the file, so each frame lies in the folder of its latest verdict. The frame comes from the evidence
(the raw frame beside the overlay) or, for the camera's latest inspection, from memory; an inspection
without either (a normal verdict whose evidence was not kept) is reviewed without a frame.

All or nothing: the frame is filed inside the review's transaction (written beside, synced, then
renamed, so no empty or partial frame is ever filed) and the review is rolled back when it cannot be;
the earlier copy of a re-reviewed frame is removed only once the new review is committed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

from runtime.image_io import write_image
from runtime.station.evidence import frame_path
from runtime.station.history import VERDICTS, History
from runtime.station.live import LiveFeed
from runtime.station.messages import iso_time, review_message
from runtime.station.publisher import Publisher

log = logging.getLogger(__name__)


class ReviewError(ValueError):
    """A review that cannot be taken; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Reviews:
    def __init__(self, publisher: Publisher, folder: Path, history: History, live: LiveFeed) -> None:
        self.publisher = publisher
        self.folder = folder
        self.history = history
        self.live = live

    def review(self, inspection_id: str, verdict: str, reviewer: str, note: str | None = None) -> dict:
        if verdict not in VERDICTS:
            raise ReviewError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict[:40]!r}", 400)
        inspection = self.history.get(inspection_id)
        if inspection is None:
            raise ReviewError(f"no inspection {inspection_id[:64]!r} in the history (unknown or pruned)", 404)
        moment = time.time()
        camera = inspection["camera"]
        earlier = [path for other in VERDICTS for path in sorted((self.folder / camera / other).glob(
            f"{inspection_id}.*")) if not path.name.startswith(".")]
        try:
            review = self.history.add_review(inspection_id, camera, verdict, reviewer, moment, note,
                                             lambda: self._file_frame(inspection, verdict, earlier))
        except sqlite3.Error as exc:
            log.error("review of inspection %s not recorded: %s", inspection_id, exc, extra={"camera": camera})
            raise ReviewError(f"the review was not recorded: the history database failed ({exc}); try again", 503) \
                from None
        except OSError as exc:
            log.error("review of inspection %s not recorded: cannot file its frame: %s", inspection_id, exc,
                      extra={"camera": camera})
            raise ReviewError(f"the review was not recorded: its frame cannot be filed under {self.folder} "
                              f"({exc.strerror or exc})", 507) from None
        for path in earlier:  # the review is committed: the frame now lives in its new verdict's folder only
            if str(path) != review["copy"]:
                path.unlink(missing_ok=True)
        message = review_message(self.publisher.station, inspection, review)
        self.publisher.review(inspection["camera"], message)
        self.live.publish("review", {"id": inspection_id, "camera": inspection["camera"], "verdict": verdict,
                                     "reviewer": reviewer, "timestamp": iso_time(moment)})
        log.info("inspection %s on camera %s reviewed as %s by %s", inspection_id, inspection["camera"], verdict,
                 reviewer, extra={"camera": inspection["camera"], "inspection": inspection_id, "verdict": verdict,
                                  "reviewer": reviewer})
        return {**review, "inspection": inspection_id, "camera": inspection["camera"]}

    def _file_frame(self, inspection: dict, verdict: str, earlier: list[Path]) -> Path | None:
        """Put the raw frame into ``reviewed/<camera>/<verdict>/<id>.<jpg|png>``; None when no frame is left.
        Raises OSError when it cannot be written whole (nothing, not even an empty file, is left then)."""
        camera, inspection_id = inspection["camera"], inspection["id"]
        folder = self.folder / camera / verdict
        folder.mkdir(parents=True, exist_ok=True)
        if earlier:  # a second review: the frame goes to its new verdict (or is already there)
            target = folder / earlier[0].name
            if earlier[0] != target:
                _write_whole(target, lambda partial: shutil.copyfile(earlier[0], partial))
            return target
        source = frame_path(inspection["overlay"]) if inspection["overlay"] else None
        if source is not None and source.is_file():
            target = folder / f"{inspection_id}.jpg"
            _write_whole(target, lambda partial: shutil.copyfile(source, partial))
            return target
        latest = self.live.latest_frame(camera)
        if latest is not None and latest[0] == inspection_id:
            target = folder / f"{inspection_id}.png"
            _write_whole(target, lambda partial: write_image(partial, latest[1]))
            return target
        log.warning("inspection %s reviewed without a frame: its evidence was not kept (evidence.save: all keeps "
                    "every frame)", inspection_id, extra={"camera": camera, "inspection": inspection_id})
        return None


def _write_whole(target: Path, write) -> None:
    """``write(partial)`` beside ``target``, synced and renamed into place: ``target`` is whole or absent."""
    partial = target.with_name(f".partial-{target.name}")  # hidden: never listed, never sent
    try:
        write(partial)
        with open(partial, "rb+") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise OSError(f"{partial}: nothing was written")
            os.fsync(handle.fileno())
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
