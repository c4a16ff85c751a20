"""The station's memory for its page: every inspection and every review, in ``<state_dir>/history.sqlite``.

The outbox forgets a message once the broker has it; the page needs the last hours to draw the
score chart, list and filter results, and find an inspection's evidence for a review. Kept
bounded by count and age (checked every ``PRUNE_EVERY`` inspections); reviewed inspections are
kept, since a person's verdict is what retraining needs and there are few of them.

A camera thread never writes: ``record`` queues the row and the history's own thread writes the
queue in batches, so a locked database (a backup, another writer) or a full disk delays the page,
never the line. A batch that fails is retried; rows are lost only when ``MAX_QUEUED`` are waiting,
and ``problem`` says so for ``/healthz`` while writes fail. The page reads through a second
connection (WAL lets it read while the writer writes). A review is one transaction around filing
its frame: either both happen or neither (see ``add_review``). A database that is corrupt at start
is moved aside (``history.sqlite.corrupt-<time>``) and a fresh one begun: the page's memory is not
worth a station that cannot start.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from runtime.station.messages import Inspection

log = logging.getLogger(__name__)

HISTORY = "history.sqlite"  # its name in the state folder
PRUNE_EVERY = 500
VERDICTS = ("normal", "defect")  # what a reviewer may say
MAX_QUEUED = 10_000  # inspections waiting to be written; beyond, the newest are lost (and counted)
BATCH = 500  # rows written in one transaction
BUSY_TIMEOUT_S = 2.0  # how long one write waits for a lock held elsewhere before it is retried
RETRY_S = 0.5
CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # errors that mean the file itself is broken

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
_INSERT = f"INSERT OR IGNORE INTO inspections ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class History:
    def __init__(self, path: str | Path, max_inspections: int, max_days: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_inspections = max_inspections
        self.max_days = max_days
        self.write_failures = 0  # write attempts that failed (each is retried)
        self.lost = 0  # inspections never written (the queue was full)
        self._failing: tuple[float, str] | None = None  # (since, error) while writes fail
        self._since_prune = 0
        self._lock = threading.Lock()
        self._db = _open_or_replace(self.path)
        self._db.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        self.prune()
        self._queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self._closing = threading.Event()
        self._pending: dict[str, tuple] = {}  # inspection id -> its queued row, until written (get finds it there)
        self._writer = threading.Thread(target=self._write_queue, name="history", daemon=True)
        self._writer.start()

    # -- writing ---------------------------------------------------------------------------------

    def record(self, inspection: Inspection, frame_path: str | None) -> None:
        """Queue one row per inspection; never blocks and never raises (the camera thread calls it)."""
        result = inspection.result
        row = (inspection.id, inspection.camera, inspection.started, inspection.part_id, inspection.source,
               result.label, float(result.score), float(result.normalized_score), float(inspection.bundle.threshold),
               result.kind, float(result.confidence),
               json.dumps({k: round(float(v), 6) for k, v in result.kind_scores.items()}),
               json.dumps([list(box) for box in inspection.regions]), round(inspection.total_ms, 3),
               round(result.latency_ms, 3), inspection.bundle.name, inspection.bundle.hash, inspection.heatmap_path,
               frame_path, None)
        try:
            self._queue.put_nowait(row)
            self._pending[inspection.id] = row
        except queue.Full:
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error("history %s: %d inspections waiting to be written; %d lost so far", self.path,
                          MAX_QUEUED, self.lost)

    @property
    def problem(self) -> str | None:
        """Why the history is not being written right now (for /healthz), or None."""
        if self._failing is None:
            return None
        since, error = self._failing
        return (f"history {self.path}: writes failing for {time.monotonic() - since:.0f} s ({error}); "
                f"{self._queue.qsize()} inspection(s) waiting, {self.lost} lost")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written (or ``timeout``); True when the queue is empty."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _write_queue(self) -> None:
        """The history thread: write what is queued in batches, retrying a batch that fails until it goes."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for row in batch if row is not None]
            while rows and not self._write(rows):
                if self._closing.is_set():  # what cannot be written now is lost
                    self.lost += len(rows)
                    break
                self._closing.wait(RETRY_S)
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _write(self, rows: list[tuple]) -> bool:
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(_INSERT, rows)
                    self._since_prune += len(rows)
                    if self._since_prune >= PRUNE_EVERY:
                        self._prune()
            except sqlite3.Error as exc:
                self.write_failures += 1
                if self._failing is None:
                    self._failing = (time.monotonic(), str(exc))
                    log.error("history %s: cannot record inspections (%s); retrying, the line goes on", self.path, exc)
                return False
        for row in rows:
            self._pending.pop(row[0], None)
        if self._failing is not None:
            log.info("history %s: writing again after %.0f s", self.path, time.monotonic() - self._failing[0])
            self._failing = None
        return True

    def add_review(self, inspection_id: str, camera: str, verdict: str, reviewer: str, moment: float,
                   note: str | None, file_frame: Callable[[], Path | None] | None = None) -> dict:
        """Store a review (every review is kept; the latest is the inspection's) and file its frame, all or nothing:
        ``file_frame`` runs inside the transaction, and a frame that cannot be filed (disk full) rolls the review
        back; a station killed in between has the record without the file or neither, never the file alone
        (the retraining tar is built from the records). Raises sqlite3.Error or the filing's OSError."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                pending = self._pending.get(inspection_id)
                if pending is not None:  # reviewed before the history's thread wrote it: written here, first
                    self._db.execute(_INSERT, pending)
                cursor = self._db.execute("INSERT INTO reviews (inspection, camera, verdict, reviewer, time, note) "
                                          "VALUES (?, ?, ?, ?, ?, ?)",
                                          (inspection_id, camera, verdict, reviewer, moment, note))
                self._db.execute("UPDATE inspections SET review = ? WHERE id = ?", (verdict, inspection_id))
                copy = file_frame() if file_frame is not None else None
                if copy is not None:
                    self._db.execute("UPDATE reviews SET copy = ? WHERE row = ?", (str(copy), cursor.lastrowid))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return {"verdict": verdict, "reviewer": reviewer, "time": moment, "note": note,
                "copy": str(copy) if copy is not None else None}

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
            pending = self._pending.get(inspection_id)
            return _as_dict(dict(zip(_COLUMNS, pending, strict=True))) | {"reviews": []} if pending else None
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

    def reviewed_frames(self, camera: str, verdict: str, limit: int) -> list[Path]:
        """The filed frames of the inspections whose latest review is ``verdict``, newest review first: what the
        retraining download carries (a file in the folder without a committed review is never among them)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT r.copy FROM reviews r JOIN (SELECT MAX(row) AS row FROM reviews WHERE camera = ? "
                "GROUP BY inspection) latest ON r.row = latest.row WHERE r.verdict = ? AND r.copy IS NOT NULL "
                "ORDER BY r.row DESC LIMIT ?", (camera, verdict, limit)).fetchall()
        return [Path(row[0]) for row in rows]

    def count(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]

    def close(self) -> None:
        """Write what is queued (as far as the database lets), then close."""
        self._closing.set()
        self._queue.put(None)
        self._writer.join(timeout=30)
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        db.close()
        raise sqlite3.DatabaseError(f"quick_check: {verdict[:200]}")
    db.executescript(_SCHEMA)
    return db


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """The file itself is broken (not a lock, a permission or a full disk)."""
    return getattr(exc, "sqlite_errorname", None) in CORRUPT or str(exc).startswith("quick_check")


def corruption(path: Path) -> str | None:
    """Why the database at ``path`` is corrupt, or None (also when there is none yet); opened read-only."""
    if not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return str(exc) if _is_corrupt(exc) else None
    return None if verdict == "ok" else f"quick_check: {verdict[:200]}"


def _open_or_replace(path: Path) -> sqlite3.Connection:
    """The history database; a corrupt one is moved aside (with its WAL) and a fresh one begun."""
    try:
        return _connect(path)
    except sqlite3.Error as exc:
        if not _is_corrupt(exc):
            raise
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                Path(f"{path}{suffix}").replace(f"{aside}{suffix}")
        log.error("history %s is corrupt (%s): moved aside to %s; starting a fresh history (the page's past "
                  "inspections are in the old file; reviewed frames stay in reviewed/)", path, exc, aside)
        return _connect(path)


def _as_dict(row: sqlite3.Row | dict) -> dict:
    item = dict(row)
    for column in _JSON_COLUMNS:
        item[column] = json.loads(item[column])
    return item
