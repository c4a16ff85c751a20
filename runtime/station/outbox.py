"""The on-disk outbox: every result, alert and trigger answer waits here until the broker has acknowledged it.

SQLite in WAL mode keeps messages across a crash or a ``kill -9`` of the station (a commit in
WAL mode with ``synchronous=NORMAL`` survives a process crash; only a power cut can lose the
last transactions). Rows are numbered by an AUTOINCREMENT ``seq`` that is never reused, which
gives delivery order and lets a consumer see gaps. While the broker is away the outbox is
bounded: beyond ``max_results`` the oldest *results* are dropped (and counted); alerts and
errors never.

Accepted triggers are written to a second table when they arrive and deleted in the same
transaction that stores their answer, so a station killed in between finds them at the next
start and answers them with an error naming their ``part_id``.

A write that fails (disk full, I/O error) never loses the message nor stops the caller: the
message is held in memory, counted, and written at the next attempt (every ``put`` and every
sender poll), in its original order; ``problem`` says why while anything is held.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESULT = "result"
ALERT = "alert"
ERROR = "error"
REVIEW = "review"  # a person's verdict from the page: never dropped, like alerts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB
);
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    part_id TEXT NOT NULL,
    received REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    kind: str
    topic: str
    qos: int
    payload: bytes


@dataclass
class _Held:
    """A message (or a removal) that could not be written yet."""

    kind: str
    topic: str
    message: dict
    qos: int
    answers: int | None  # the trigger row this message answers
    seq: int | None = None  # once written


class Outbox:
    def __init__(self, path: str | Path, max_results: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_results = max_results
        self.dropped_results = 0
        self.write_failures = 0
        self.problem: str | None = None
        self._held: list[_Held] = []
        self._unremoved: set[int] = set()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._results = self._db.execute("SELECT COUNT(*) FROM messages WHERE kind = ?", (RESULT,)).fetchone()[0]

    # -- writing ---------------------------------------------------------------------------------

    def put(self, kind: str, topic: str, message: dict, qos: int = 1, answers: int | None = None) -> int | None:
        """Store ``message`` (JSON, its ``seq`` written into it); ``answers`` deletes that trigger row with it.
        Returns the seq, or None when the disk refused and the message is held for the next attempt.
        """
        held = _Held(kind, topic, message, qos, answers)
        with self._lock:
            self._held.append(held)
            self.flush()
        return held.seq

    def flush(self) -> bool:
        """Write what is held, oldest first; True when nothing is left in memory."""
        with self._lock:
            try:
                while self._held:
                    self._write(self._held[0])
                    self._held.pop(0)
                for seq in sorted(self._unremoved):
                    self._delete(seq)
                    self._unremoved.discard(seq)
            except sqlite3.Error as exc:
                self._failed(exc)
                return False
            if self.problem is not None:
                log.warning("outbox writable again: every held message is stored", extra={"outbox": str(self.path)})
                self.problem = None
            return True

    def _failed(self, exc: sqlite3.Error) -> None:
        self.write_failures += 1
        problem = (f"outbox {self.path} cannot be written ({exc}); {len(self._held)} message(s) held in memory, "
                   f"retrying")
        if self.problem is None:
            log.error("%s", problem, extra={"outbox": str(self.path), "write_failures": self.write_failures})
        self.problem = problem

    def _write(self, held: _Held) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("INSERT INTO messages (kind, topic, qos) VALUES (?, ?, ?)",
                                   (held.kind, held.topic, held.qos)).lastrowid
            payload = json.dumps({**held.message, "seq": seq}, separators=(",", ":")).encode()
            self._db.execute("UPDATE messages SET payload = ? WHERE seq = ?", (payload, seq))
            if held.answers is not None:
                self._db.execute("DELETE FROM triggers WHERE id = ?", (held.answers,))
            if held.kind == RESULT:
                self._drop_oldest_results(self._results + 1)
        held.seq = seq  # only once committed
        if held.kind == RESULT:
            self._results += 1

    def _drop_oldest_results(self, results: int) -> None:
        excess = results - self.max_results
        if excess <= 0:
            return
        dropped = self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE kind = ? "
                                   "ORDER BY seq LIMIT ?) RETURNING seq", (RESULT, excess)).fetchall()
        self._results -= len(dropped)
        self.dropped_results += len(dropped)
        log.warning("outbox full (%d results): dropped the oldest result(s) seq %s", self.max_results,
                    ", ".join(str(row[0]) for row in dropped), extra={"dropped_total": self.dropped_results})

    # -- accepted triggers -------------------------------------------------------------------------

    def accept_trigger(self, camera: str, part_id: str) -> int | None:
        """Record an accepted trigger until its answer is stored; None if the disk refuses (it is still served)."""
        with self._lock:
            try:
                return self._db.execute("INSERT INTO triggers (camera, part_id, received) VALUES (?, ?, ?)",
                                        (camera, part_id, time.time())).lastrowid
            except sqlite3.Error as exc:
                self._failed(exc)
                return None

    def unanswered_triggers(self) -> list[tuple[int, str, str]]:
        """(row id, camera, part_id) of triggers accepted by an earlier run and never answered."""
        with self._lock:
            return self._db.execute("SELECT id, camera, part_id FROM triggers ORDER BY id").fetchall()

    # -- delivery ------------------------------------------------------------------------------------

    def after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` stored messages with a seq above ``seq``, oldest first (held ones are retried first)."""
        with self._lock:
            if self._held or self._unremoved:
                self.flush()
            rows = self._db.execute("SELECT seq, kind, topic, qos, payload FROM messages WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [OutboxRow(*row) for row in rows]

    def remove(self, seq: int) -> None:
        """Forget a message the broker acknowledged; a failing delete is retried later, never raised."""
        with self._lock:
            try:
                self._delete(seq)
            except sqlite3.Error as exc:
                self._unremoved.add(seq)
                self._failed(exc)

    def _delete(self, seq: int) -> None:
        removed = self._db.execute("DELETE FROM messages WHERE seq = ? RETURNING kind", (seq,)).fetchone()
        if removed is not None and removed[0] == RESULT:
            self._results -= 1

    def pending(self) -> int:
        """Messages not yet acknowledged: stored, plus held in memory."""
        with self._lock:
            stored = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            return stored - len(self._unremoved) + len(self._held)

    @property
    def held(self) -> int:
        return len(self._held)

    def close(self) -> None:
        with self._lock:
            self.flush()
            if self._held:
                log.error("outbox: %d message(s) could not be written before the stop and are lost", len(self._held))
            self._db.close()
