"""The usage spool: a service process appends each usage record to a local file before it answers.

A plain ``write`` puts the line in the kernel's page cache, which outlives the process, SIGKILL included
(only a machine crash can lose it: there is no fsync, to keep the request path at one system call). The
flusher (mcp/tenancy/usage.py) reads the files and writes their records to PostgreSQL.

Files: ``<dir>/<service>-<pid>-<random>.spool``, mode 0600 in a 0700 directory, because they hold instance
ids. One line per record, tab-separated: key, instance id (32 hex digits), service, tool, outcome, latency
(microseconds), called at (microseconds since the epoch). A process holds an exclusive ``flock`` on each of its
files while it lives, so a file whose lock can be taken belongs to a dead process: a process of the same
service adopts it, writes its records, then deletes it. flock makes adoption safe when several processes of a
service share the directory: one of them gets the lock, the others skip the file.

Records are written exactly once: every record has a unique key (a random per-process prefix and a counter)
and the insert skips keys already stored (db/migrations/0002_usage_spool.sql). So a file replayed from its
start, after its owner died between writing a batch to the database and moving its read offset, counts
nothing twice.

Disk use: a file's records are drained in order; the live file is truncated when everything in it is in the
database, and replaced by a new one (the old one deleted once drained) when ``rotate_bytes`` of it are
drained, so under steady load it does not grow. The recorder caps the records not yet written (its
``max_buffer``), so a process's files hold at most that many records (about 110 bytes each) plus up to
``rotate_bytes`` already written.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROTATE_BYTES = 1 << 20
_READ_BYTES = 1 << 18
_SUFFIX = ".spool"
_TMP_SUFFIX = ".tmp"
# A temporary file (created, then locked, then renamed into place) older than this was left by a process that
# died in between; younger ones may be in the middle of that dance.
_STALE_TMP_S = 60.0

# Strict, so a damaged line is skipped alone instead of failing the whole batch's insert (a bad uuid).
# The tool name may hold a tab: it is the only field that is not checked when the record is made.
_LINE = re.compile(r"([0-9a-f]{32})\t([0-9a-f]{32})\t([a-z][a-z0-9_-]*)\t(.+)\t([a-z_]+)\t([0-9]+)\t([0-9]+)")

# key, instance id (hex), service, tool, outcome, latency in microseconds, called at in microseconds
Row = tuple[str, str, str, str, str, int, int]


def parse(line: bytes) -> Row | None:
    """One spool line back into a record; None when it is not one (a torn or foreign line)."""
    try:
        match = _LINE.fullmatch(line.decode())
    except UnicodeDecodeError:
        return None
    if match is None:
        return None
    key, iid, service, tool, outcome, latency, at = match.groups()
    return key, iid, service, tool, outcome, int(latency), int(at)


@dataclass(eq=False)
class Segment:
    """One spool file: everything before ``offset`` is in the database.

    A file this process writes also keeps what it appended in memory (``recent``: each row with its
    line's length, starting at byte ``recent_at``), so draining it neither re-reads nor re-parses the
    file; the file is what survives a kill, and adopted files are read from disk.
    """

    path: Path
    fd: int
    own: bool
    offset: int = 0
    size: int = 0  # bytes appended by this process (own segments)
    recent: deque[tuple[Row, int]] = field(default_factory=deque)
    recent_at: int = 0


class UsageSpool:
    """This process's spool files (the one being written, older ones not yet drained) and adopted ones."""

    def __init__(self, directory: Path, service: str, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = directory
        self.service = service
        self.rotate_bytes = rotate_bytes
        self._segments: list[Segment] = []  # adopted first, then own, oldest first; the last own one is written
        self._names: set[str] = set()
        self._current: Segment | None = None
        self._fd = -1  # the current segment's descriptor while appending works, else -1
        self._rotate_failed = False

    @classmethod
    def open(cls, directory: Path, service: str, rotate_bytes: int = ROTATE_BYTES) -> UsageSpool | None:
        """The spool, with its first file created and locked; None (logged) when the directory is unusable."""
        spool = cls(directory, service, rotate_bytes)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if directory.stat().st_mode & 0o077:
                directory.chmod(0o700)
            spool._start_segment()
        except OSError as e:
            log.error("usage spool directory %s is unusable (%s): usage records are kept in memory only, "
                      "so a killed process loses those not yet written", directory, e.strerror or e)
            return None
        return spool

    @property
    def writable(self) -> bool:
        return self._fd >= 0

    def append(self, line: bytes, row: Row) -> bool:
        """Append one record (``line``, and ``row``, what ``parse(line)`` gives back); False (the caller
        keeps the record in memory) when the spool cannot."""
        fd = self._fd
        if fd < 0:
            return False
        try:
            written = os.write(fd, line)
        except OSError as e:
            self._broken(e, 0)
            return False
        if written != len(line):
            self._broken(None, written)
            return False
        segment = self._current
        assert segment is not None
        if not segment.recent:
            segment.recent_at = segment.size
        segment.recent.append((row, written))
        segment.size += written
        return True

    def _broken(self, error: OSError | None, partial: int) -> None:
        """Stop appending for the life of the process (disk full, I/O error); records go to memory instead."""
        fd, self._fd = self._fd, -1
        if partial:
            try:  # cut the torn line off; should that fail, the reader ignores a last line without its newline
                os.ftruncate(fd, os.fstat(fd).st_size - partial)
            except OSError:
                pass
        reason = (error.strerror or str(error)) if error else "short write"
        log.error("writing the usage spool in %s failed (%s): usage records are kept in memory only until "
                  "this process restarts", self.directory, reason)

    def _start_segment(self) -> None:
        name = f"{self.service}-{os.getpid()}-{secrets.token_hex(6)}{_SUFFIX}"
        path = self.directory / name
        # Created under a name adoption ignores and renamed once locked, so no one adopts a live file.
        tmp = self.directory / f".{name}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            _unlink(tmp)
            raise
        segment = Segment(path, fd, own=True)
        self._segments.append(segment)
        self._names.add(name)
        self._current = segment
        self._fd = fd

    def segments(self) -> list[Segment]:
        return self._segments

    def read(self, segment: Segment, max_rows: int) -> tuple[list[Row], int, int]:
        """Up to ``max_rows`` records after the segment's offset: (rows, offset after them, bad lines skipped)."""
        if segment.recent and segment.recent_at == segment.offset:
            rows = []
            end = segment.offset
            for row, length in itertools.islice(segment.recent, max_rows):
                rows.append(row)
                end += length
            return rows, end, 0
        data = os.pread(segment.fd, _READ_BYTES, segment.offset)
        rows: list[Row] = []
        bad = pos = 0
        while len(rows) < max_rows:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            row = parse(data[pos:end])
            if row is None:
                bad += 1
            else:
                rows.append(row)
            pos = end + 1
        if pos == 0 and len(data) == _READ_BYTES:
            # No newline in a full read: not a spool line; skip it rather than stall on it forever.
            return [], segment.offset + len(data), 1
        return rows, segment.offset + pos, bad

    def advance(self, segment: Segment, offset: int) -> None:
        """Everything before ``offset`` is in the database; start a new file once enough of this one is."""
        segment.offset = offset
        recent = segment.recent
        while recent and segment.recent_at < offset:
            segment.recent_at += recent.popleft()[1]
        if segment is self._current and offset >= self.rotate_bytes and self._fd >= 0:
            self._rotate()

    def _rotate(self) -> None:
        try:
            self._start_segment()
        except OSError as e:
            if not self._rotate_failed:
                self._rotate_failed = True
                log.warning("cannot start a new usage spool file in %s (%s); the current one keeps growing",
                            self.directory, e.strerror or e)
            return
        self._rotate_failed = False

    def finish(self, segment: Segment) -> bool:
        """The segment is drained to its end: truncate the file being written, delete any other. True if deleted.

        Must run with no await since the read that found the end, so no record was appended meanwhile.
        """
        if segment is self._current and self._fd >= 0:
            if segment.offset:
                os.ftruncate(segment.fd, 0)
                segment.offset = segment.size = segment.recent_at = 0
                segment.recent.clear()
            return False
        _unlink(segment.path)
        os.close(segment.fd)
        self._segments.remove(segment)
        self._names.discard(segment.path.name)
        if segment is self._current:
            self._current = None
        return True

    def adopt(self) -> int:
        """Take over the spool files of dead processes of this service (their lock is free); how many."""
        adopted = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(_TMP_SUFFIX) and \
                    _service_of(name[1:].removesuffix(_TMP_SUFFIX)) == self.service:
                self._remove_stale_tmp(entry)
                continue
            if name in self._names or _service_of(name) != self.service:
                continue
            fd = _lock_existing(Path(entry.path))
            if fd is None:
                continue
            self._segments.insert(adopted, Segment(Path(entry.path), fd, own=False))
            self._names.add(name)
            adopted += 1
        if adopted:
            log.info("adopted %d usage spool file(s) of stopped %s processes", adopted, self.service)
        return adopted

    def _remove_stale_tmp(self, entry: os.DirEntry[str]) -> None:
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < _STALE_TMP_S:
                return
        except OSError:
            return
        fd = _lock_existing(Path(entry.path))
        if fd is not None:
            _unlink(Path(entry.path))
            os.close(fd)

    def pending_bytes(self) -> int:
        """Bytes not yet drained, over every file (an fstat each; for shutdown and tests, not the hot path)."""
        total = 0
        for segment in self._segments:
            try:
                total += max(0, os.fstat(segment.fd).st_size - segment.offset)
            except OSError:
                pass
        return total

    def close(self) -> int:
        """Release every file, deleting those with nothing left to write; how many were kept for adoption."""
        kept = 0
        for segment in self._segments:
            try:
                left = os.fstat(segment.fd).st_size > segment.offset
            except OSError:
                left = True
            if left:
                kept += 1
            else:
                _unlink(segment.path)
            os.close(segment.fd)
        self._segments.clear()
        self._names.clear()
        self._current = None
        self._fd = -1
        return kept


def _service_of(name: str) -> str | None:
    """The service a spool file name belongs to (``<service>-<pid>-<random>.spool``); service names may hold '-'."""
    if not name.endswith(_SUFFIX):
        return None
    parts = name.removesuffix(_SUFFIX).rsplit("-", 2)
    return parts[0] if len(parts) == 3 else None


def _lock_existing(path: Path) -> int | None:
    """A descriptor holding the exclusive lock of ``path`` if no living process holds it, else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Another adopter may have drained and deleted it between our open and our lock.
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
