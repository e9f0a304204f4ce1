"""Reading the supervisors' log files: records, the last N of them, and following a file across rotations.

A line the supervisor writes starts with an ISO-8601 timestamp (``mcp.ops.supervisor.logfile``:
``2026-12-01T15:50:01.123+00:00 text``). A record is such a line plus the lines without a timestamp that
follow it (the rest of a multi-line message, a traceback's lines), so a record is never split when logs
are interleaved or cut at the N-th record.

Rotation renames ``x.log`` to ``x.log.1`` (older ones shift to ``.2``...) and starts a new ``x.log``. A
``Follower`` keeps the file open, so it reads the old inode to its end after the rename, then whatever
rotations it slept through (``.k-1`` ... ``.1`` when its old file is now ``.k``), then the new file from its
first byte: no line is lost or read twice.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})? ")
_LINE_STAMP = re.compile(rb"(?:^|\n)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
# Older than any real line: what lines with no timestamp anywhere before them sort as.
EARLIEST = datetime.min.replace(tzinfo=UTC)
BLOCK = 64 * 1024
# A writer that never ends its line (not the supervisor, whose lines are at most 64 KiB) still gets shown.
MAX_PENDING_BYTES = 1024 * 1024
# Rotated files looked at, at most (the supervisor keeps 5 by default).
MAX_BACKUPS = 100


def stamp_of(line: str) -> datetime | None:
    """The timestamp a log line starts with, as an aware datetime (naive ones are local time)."""
    match = _STAMP.match(line)
    if match is None:
        return None
    try:
        stamp = datetime.fromisoformat(match.group(0).rstrip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.astimezone()


@dataclass
class Record:
    """A timestamped line and its continuation lines. ``at`` is inherited by lines with no timestamp of
    their own (the tail of a record whose first line was read earlier)."""

    at: datetime
    lines: list[str] = field(default_factory=list)


class Grouper:
    """Cut a stream of lines into records, remembering the last timestamp between calls."""

    def __init__(self, last: datetime = EARLIEST) -> None:
        self.last = last

    def feed(self, lines: Iterable[str]) -> list[Record]:
        records: list[Record] = []
        for line in lines:
            stamp = stamp_of(line)
            if stamp is not None:
                self.last = stamp
                records.append(Record(stamp, [line]))
            elif records:
                records[-1].lines.append(line)
            else:
                records.append(Record(self.last, [line]))
        return records


def backup(path: Path, index: int) -> Path:
    """``x.log.3`` for ``x.log`` and 3, as the supervisor names its rotated files."""
    return path.with_name(f"{path.name}.{index}")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")


def _read_all(fd: int, offset: int = 0) -> bytes:
    chunks = []
    while chunk := os.pread(fd, BLOCK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _tail_lines(fd: int, end: int, n: int) -> tuple[list[str], bool]:
    """Complete lines from the end of the first ``end`` bytes, reading backwards until they hold more than
    ``n`` timestamped lines; and whether the file's first byte was reached."""
    data = b""
    start = end
    while start > 0:
        previous = start
        start = max(0, start - BLOCK)
        data = os.pread(fd, previous - start, start) + data
        # One more stamp than wanted: the lines before it belong to an older record cut by the read.
        if len(_LINE_STAMP.findall(data)) > n:
            break
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if start > 0:
        lines = lines[1:]  # the first may have been cut mid-line
    return [_decode(line) for line in lines], start == 0


def tail(path: Path, n: int, first: int = 0) -> list[Record]:
    """The last ``n`` records of a log, reaching into ``x.log.1``, ``.2``... when ``x.log`` holds fewer
    (``first``: start at that rotated file). Reads what is there now, including a last line still without
    its newline."""
    found: list[Record] = []
    for index in range(first, MAX_BACKUPS + 1):
        if len(found) >= n:
            break
        candidate = path if index == 0 else backup(path, index)
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:
            if index == 0:
                continue  # between a rotation's rename and the new file: the rotated ones are there
            break
        try:
            records, _ = _records_before(fd, os.fstat(fd).st_size, n - len(found), complete_only=False)
        finally:
            os.close(fd)
        found = records + found
    return found[-n:] if n > 0 else []


def _records_before(fd: int, end: int, n: int, complete_only: bool) -> tuple[list[Record], int]:
    """The last ``n`` records in the first ``end`` bytes, and the offset just after what was used (a final
    line without its newline is left out when ``complete_only``: a follower reads it once it is whole)."""
    if complete_only:
        last_newline = _last_newline(fd, end)
        end = last_newline + 1 if last_newline >= 0 else 0
    if n <= 0 or end == 0:
        return [], end
    lines, whole = _tail_lines(fd, end, n)
    records = Grouper().feed(lines)
    if not whole and records and stamp_of(records[0].lines[0]) is None:
        records = records[1:]  # the end of a record whose first line lies before what was read
    return records[-n:], end


def _last_newline(fd: int, end: int) -> int:
    """The offset of the last newline in the first ``end`` bytes, -1 if there is none."""
    position = end
    while position > 0:
        start = max(0, position - BLOCK)
        found = os.pread(fd, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        position = start
    return -1


class Follower:
    """New lines of one log file as they are written, across rotations and truncation.

    ``start(n)`` returns the last ``n`` records and leaves the follower just after them; ``poll()``
    returns the complete lines written since, in order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None
        self._offset = 0
        self._pending = b""

    def start(self, n: int) -> list[Record]:
        """Open the file (if it exists) and return its last ``n`` records; following goes on from there."""
        earlier: list[Record] = []
        if not self._open():
            return tail(self.path, n)  # nothing to follow yet: show what rotation left behind
        assert self._fd is not None
        records, self._offset = _records_before(self._fd, os.fstat(self._fd).st_size, n, complete_only=True)
        if len(records) < n:
            earlier = tail(self.path, n - len(records), first=1)
        return (earlier + records)[-n:] if n > 0 else []

    def poll(self) -> list[str]:
        """The complete lines written since the last call (reopening the file after a rotation)."""
        if self._fd is None and not self._open():  # once it exists, every line of it is new
            return []
        lines = self._drain()
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return lines  # between the rename and the new file: the next poll finds it
        if (named.st_dev, named.st_ino) == self._id:
            if named.st_size < self._offset:  # truncated in place: start again from its first byte
                self._offset, self._pending = 0, b""
                lines += self._drain()
            return lines
        return lines + self._rotated()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        info = os.fstat(fd)
        self._fd, self._id, self._offset, self._pending = fd, (info.st_dev, info.st_ino), 0, b""
        return True

    def _drain(self) -> list[str]:
        assert self._fd is not None
        data = _read_all(self._fd, self._offset)
        self._offset += len(data)
        *complete, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > MAX_PENDING_BYTES:
            complete.append(self._pending)
            self._pending = b""
        return [_decode(line) for line in complete]

    def _rotated(self) -> list[str]:
        """Finish the renamed file, read the rotations slept through, then switch to the new file."""
        lines = self._drain()
        if self._pending:  # the writer has moved on: this line will never be finished
            lines.append(_decode(self._pending))
        old = self._id
        self.close()
        if not self._open():
            return lines
        new = self._id
        for path in self._missed(old):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                info = os.fstat(fd)
                # Renamed again while we looked: the file we follow now, or the one we just finished.
                if (info.st_dev, info.st_ino) not in (old, new):
                    raw = _read_all(fd)
                    lines += [_decode(line) for line in raw.split(b"\n")[:-1 if raw.endswith(b"\n") else None]]
            finally:
                os.close(fd)
        return lines + self._drain()

    def _missed(self, old: tuple[int, int] | None) -> list[Path]:
        """The rotated files newer than ``old`` (which is now ``.k``): ``.k-1`` down to ``.1``, oldest first."""
        for index in range(1, MAX_BACKUPS + 1):
            try:
                info = os.stat(backup(self.path, index))
            except FileNotFoundError:
                return []  # ours was deleted (no backups kept): what came between is gone too
            if (info.st_dev, info.st_ino) == old:
                return [backup(self.path, j) for j in range(index - 1, 0, -1)]
        return []
