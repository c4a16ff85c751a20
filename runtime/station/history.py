"""The station's memory for its page: every inspection and every review, in ``<state_dir>/history.sqlite``.

The outbox forgets a message once the broker has it; the page needs the last hours to draw the
score chart, list and filter results, and find an inspection's evidence for a review. Kept
bounded by count and age (checked every ``PRUNE_EVERY`` inspections); reviewed inspections are
kept, since a person's verdict is what retraining needs and there are few of them. A write that
fails (disk full) is logged and skipped: the page loses a row, the line never stops for it. The page reads
through a second connection (WAL lets it read while a camera writes), so a long query, such as a day's
score chart, never holds up a camera thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from runtime.station.messages import Inspection

log = logging.getLogger(__name__)

PRUNE_EVERY = 500
VERDICTS = ("normal", "defect")  # what a reviewer may say

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inspections (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    camera TEXT NOT NULL,
    time REAL NOT NULL,
    part_id TEXT,
    source TEXT,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    normalized_score REAL NOT NULL,
    threshold REAL NOT NULL,
    kind TEXT,
    confidence REAL NOT NULL,
    kind_scores TEXT NOT NULL,
    regions TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    inference_ms REAL NOT NULL,
    bundle_name TEXT NOT NULL,
    bundle_hash TEXT NOT NULL,
    overlay TEXT,
    frame TEXT,
    review TEXT
);
CREATE INDEX IF NOT EXISTS inspections_camera_time ON inspections (camera, time);
CREATE INDEX IF NOT EXISTS inspections_time ON inspections (time);
CREATE TABLE IF NOT EXISTS reviews (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    inspection TEXT NOT NULL,
    camera TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    time REAL NOT NULL,
    note TEXT,
    copy TEXT
);
CREATE INDEX IF NOT EXISTS reviews_inspection ON reviews (inspection);
"""

_COLUMNS = ("id", "camera", "time", "part_id", "source", "label", "score", "normalized_score", "threshold", "kind",
            "confidence", "kind_scores", "regions", "latency_ms", "inference_ms", "bundle_name", "bundle_hash",
            "overlay", "frame", "review")
_JSON_COLUMNS = ("kind_scores", "regions")


class History:
    def __init__(self, path: str | Path, max_inspections: int, max_days: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_inspections = max_inspections
        self.max_days = max_days
        self.write_failures = 0
        self._since_prune = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        self.prune()

    # -- writing ---------------------------------------------------------------------------------

    def record(self, inspection: Inspection, frame_path: str | None) -> None:
        """One row per inspection; never raises (the camera thread calls it)."""
        result = inspection.result
        row = (inspection.id, inspection.camera, inspection.started, inspection.part_id, inspection.source,
               result.label, float(result.score), float(result.normalized_score), float(inspection.bundle.threshold),
               result.kind, float(result.confidence),
               json.dumps({k: round(float(v), 6) for k, v in result.kind_scores.items()}),
               json.dumps([list(box) for box in inspection.regions]), round(inspection.total_ms, 3),
               round(result.latency_ms, 3), inspection.bundle.name, inspection.bundle.hash, inspection.heatmap_path,
               frame_path, None)
        with self._lock:
            try:
                self._db.execute(f"INSERT INTO inspections ({', '.join(_COLUMNS)}) "
                                 f"VALUES ({', '.join('?' * len(_COLUMNS))})", row)
                self._since_prune += 1
                if self._since_prune >= PRUNE_EVERY:
                    self._prune()
            except sqlite3.Error as exc:
                self.write_failures += 1
                if self.write_failures == 1 or self.write_failures % 1000 == 0:
                    log.error("history %s: cannot record inspection (%s); %d lost so far", self.path, exc,
                              self.write_failures)

    def add_review(self, inspection_id: str, camera: str, verdict: str, reviewer: str, moment: float,
                   note: str | None, copy: str | None) -> dict:
        """Store a review (every review is kept; the latest is the inspection's); raises sqlite3.Error."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO reviews (inspection, camera, verdict, reviewer, time, note, copy) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (inspection_id, camera, verdict, reviewer, moment, note,
                                                               copy))
            self._db.execute("UPDATE inspections SET review = ? WHERE id = ?", (verdict, inspection_id))
        return {"verdict": verdict, "reviewer": reviewer, "time": moment, "note": note, "copy": copy}

    def prune(self) -> None:
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        self._since_prune = 0
        cutoff = time.time() - self.max_days * 86400
        self._db.execute("DELETE FROM inspections WHERE review IS NULL AND (time < ? OR row <= "
                         "(SELECT MAX(row) FROM inspections) - ?)", (cutoff, self.max_inspections))

    # -- reading -----------------------------------------------------------------------------------

    def get(self, inspection_id: str) -> dict | None:
        with self._read_lock:
            row = self._reader.execute(f"SELECT {', '.join(_COLUMNS)} FROM inspections WHERE id = ?",
                                       (inspection_id,)).fetchone()
            reviews = self._reader.execute("SELECT verdict, reviewer, time, note, copy FROM reviews "
                                           "WHERE inspection = ? ORDER BY row", (inspection_id,)).fetchall()
        if row is None:
            return None
        return _as_dict(row) | {"reviews": [dict(review) for review in reviews]}

    def search(self, camera: str | None = None, label: str | None = None, kind: str | None = None,
               since: float | None = None, until: float | None = None, reviewed: bool | None = None,
               limit: int = 50, before_row: int | None = None) -> list[dict]:
        """Newest first; ``before_row`` pages further back (each row carries its ``row``)."""
        clauses, values = [], []
        for column, value in (("camera", camera), ("label", label), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        for clause, value in (("time >= ?", since), ("time < ?", until), ("row < ?", before_row)):
            if value is not None:
                clauses.append(clause)
                values.append(value)
        if reviewed is not None:
            clauses.append("review IS NOT NULL" if reviewed else "review IS NULL")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read_lock:
            rows = self._reader.execute(f"SELECT row, {', '.join(_COLUMNS)} FROM inspections {where} "
                                    "ORDER BY row DESC LIMIT ?", (*values, limit)).fetchall()
        return [_as_dict(row) for row in rows]

    def scores(self, camera: str, since: float, buckets: int) -> list[dict]:
        """The normalised score over time in at most ``buckets`` slices: max, mean, count and anomalies per slice
        (the max keeps a single bad part visible however long the window)."""
        width = max((time.time() - since) / buckets, 1e-3)
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT CAST((time - ?) / ? AS INTEGER) AS slice, MIN(time), MAX(normalized_score), "
                "AVG(normalized_score), COUNT(*), SUM(label = 'anomalous') FROM inspections "
                "WHERE camera = ? AND time >= ? GROUP BY slice ORDER BY slice", (since, width, camera, since)
            ).fetchall()
        return [{"time": round(row[1], 3), "max": round(row[2], 4), "mean": round(row[3], 4), "count": row[4],
                 "anomalies": row[5]} for row in rows]

    def count(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def _as_dict(row: sqlite3.Row) -> dict:
    item = dict(row)
    for column in _JSON_COLUMNS:
        item[column] = json.loads(item[column])
    return item
