"""The on-disk outbox: every result and alert waits here until the broker has acknowledged it.

SQLite in WAL mode keeps messages across a crash or a ``kill -9`` of the daemon (a commit in
WAL mode with ``synchronous=NORMAL`` survives a process crash; only a power cut can lose the
last transactions). Rows are numbered by an AUTOINCREMENT ``seq`` that is never reused, which
gives delivery order and lets a consumer see gaps. While the broker is away the outbox is
bounded: beyond ``max_results`` the oldest *results* are dropped (and counted); alerts never.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESULT = "result"
ALERT = "alert"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB
)
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    kind: str
    topic: str
    qos: int
    payload: bytes


class Outbox:
    def __init__(self, path: str | Path, max_results: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_results = max_results
        self.dropped_results = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._results = self._db.execute("SELECT COUNT(*) FROM messages WHERE kind = ?", (RESULT,)).fetchone()[0]

    def put(self, kind: str, topic: str, message: dict, qos: int = 1) -> int:
        """Store ``message`` (JSON) with its ``seq`` written into it; returns the seq."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("INSERT INTO messages (kind, topic, qos) VALUES (?, ?, ?)",
                                   (kind, topic, qos)).lastrowid
            message["seq"] = seq
            self._db.execute("UPDATE messages SET payload = ? WHERE seq = ?",
                             (json.dumps(message, separators=(",", ":")).encode(), seq))
            if kind == RESULT:
                self._results += 1
                self._drop_oldest_results()
        return seq

    def _drop_oldest_results(self) -> None:
        excess = self._results - self.max_results
        if excess <= 0:
            return
        dropped = self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE kind = ? "
                                   "ORDER BY seq LIMIT ?) RETURNING seq", (RESULT, excess)).fetchall()
        self._results -= len(dropped)
        self.dropped_results += len(dropped)
        log.warning("outbox full (%d results): dropped the oldest result(s) seq %s", self.max_results,
                    ", ".join(str(row[0]) for row in dropped), extra={"dropped_total": self.dropped_results})

    def after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` messages with a seq above ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, kind, topic, qos, payload FROM messages WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [OutboxRow(*row) for row in rows]

    def remove(self, seq: int) -> None:
        """Forget a message the broker acknowledged (a no-op if it was already dropped)."""
        with self._lock:
            removed = self._db.execute("DELETE FROM messages WHERE seq = ? RETURNING kind", (seq,)).fetchone()
            if removed is not None and removed[0] == RESULT:
                self._results -= 1

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
