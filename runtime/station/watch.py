"""Folder mode: pick up image files dropped into a folder once they are completely written.

Polling (not inotify) so it also works on network shares and FTP drops. A file is ready when
its size and modification time have not changed for ``settle_s``; after inspection it is moved
to ``processed/`` (or ``failed/`` when it cannot be decoded) or deleted, so nothing is read twice
and nothing is lost without a trace.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from runtime.image_io import IMAGE_SUFFIXES
from runtime.station.config import WatchConfig

log = logging.getLogger(__name__)
PROCESSED = "processed"
FAILED = "failed"


class FolderWatcher:
    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.folder = Path(config.path)
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, stable since)

    def ready(self, now: float | None = None) -> list[Path]:
        """Files whose size and mtime held still for ``settle_s``, oldest first."""
        now = time.monotonic() if now is None else now
        current: dict[Path, tuple[int, int, float]] = {}
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise FileNotFoundError(f"{self.folder}: cannot list the watched folder ({exc.strerror or exc})") from None
        for entry in entries:
            if not entry.is_file() or entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # moved away between listing and stat
            path = Path(entry.path)
            previous = self._seen.get(path)
            unchanged = previous is not None and previous[:2] == (stat.st_size, stat.st_mtime_ns)
            current[path] = (stat.st_size, stat.st_mtime_ns, previous[2] if unchanged else now)
        self._seen = current
        ready = [path for path, (size, _, since) in current.items() if size > 0 and now - since >= self.config.settle_s]
        return sorted(ready, key=lambda path: (current[path][1], path.name))

    def changed_since_ready(self, path: Path) -> bool:
        """True if the file grew or was rewritten after it was declared ready (a slow writer)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        size, mtime_ns, _ = self._seen.get(path, (None, None, 0.0))
        return (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns)

    def finish(self, path: Path, ok: bool, reason: str | None = None) -> Path | None:
        """Move the file out of the watched folder (or delete it); returns where it went. A failed file's
        ``reason`` is written beside it as ``<name>.reason.txt`` (never read back: it is not an image)."""
        self._seen.pop(path, None)
        if self.config.after == "delete" and ok:
            path.unlink(missing_ok=True)
            return None
        target_dir = self.folder / (PROCESSED if ok else FAILED)
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{path.stem}_{time.time_ns()}{path.suffix}"
        shutil.move(path, target)
        if reason is not None:
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        return target
