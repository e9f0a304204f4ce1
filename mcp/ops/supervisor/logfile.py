"""Log files of the supervised processes: timestamped lines, size-based rotation, and a logging handler.

``LogFile`` is also what ``mcp.ops.rotating_pipe`` uses for honcho's console, so every log of the
formation rotates the same way.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

# A writer printing without newlines must not make a reader buffer without bound.
MAX_LINE_BYTES = 64 * 1024


class LogFile:
    """Append timestamped raw lines to a file, rotating it to ``.1``, ``.2``... when it grows too big."""

    def __init__(self, path: Path, max_bytes: int, backups: int,
                 now: Callable[[], datetime] = lambda: datetime.now().astimezone()) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.now = now
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:  # the folder was removed (an operator's rm -rf logs): make it again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def reopen_if_removed(self) -> bool:
        """Start a new file if ours was deleted or renamed away, so lines do not go to an unreachable inode."""
        try:
            ours, named = os.fstat(self._fd), os.stat(self.path)
            if (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino):
                return False
        except OSError:
            pass
        self.close()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        return True

    def write_line(self, text: str) -> None:
        """Write one line prefixed with an ISO-8601 timestamp, rotating first if it would not fit."""
        stamp = self.now().isoformat(timespec="milliseconds")
        data = f"{stamp} {text}\n".encode("utf-8", "replace")
        # An empty file takes any line, so a line longer than max_bytes cannot rotate forever.
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self.rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def rotate(self) -> None:
        """Shift ``x.log`` -> ``x.log.1`` -> ... keeping ``backups`` old files; start an empty ``x.log``."""
        os.close(self._fd)
        for stale in self._backups_beyond(self.backups):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        if self.backups > 0:
            for index in range(self.backups, 0, -1):
                source = self.path if index == 1 else self._backup(index - 1)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(source, self._backup(index))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _backups_beyond(self, keep: int) -> list[Path]:
        """Backups left by an earlier run configured to keep more of them."""
        found = []
        for candidate in self.path.parent.glob(f"{glob.escape(self.path.name)}.*"):
            suffix = candidate.name[len(self.path.name) + 1:]
            if suffix.isdigit() and int(suffix) > keep:
                found.append(candidate)
        return found

    def close(self) -> None:
        """Release the file descriptor; later writes are a bug."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


class LogFileHandler(logging.Handler):
    """Route the supervisor's own log records into the child's error log."""

    def __init__(self, logfile: LogFile) -> None:
        super().__init__()
        self.logfile = logfile

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.logfile.write_line(self.format(record))
        except Exception:
            self.handleError(record)
