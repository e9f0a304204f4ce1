"""The access log: one line per request, in the log format, written in batches.

Every request writes a line, so the line is built directly (about 1 µs) rather than through a
``logging`` record and handler (about 9 µs, a write and a flush each), and lines are written
together at most ``flush_interval_s`` later or every ``max_lines`` lines. Lines of 5xx answers go
through ``logging`` at ERROR at once. A process that is killed outright loses
at most the last interval's lines; a normal exit writes them (at interpreter exit). Paths and methods
go through ``mcp.server.scrub`` here too, whatever the caller did: no instance id is ever written.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
import weakref
from typing import TextIO

from mcp.server.scrub import scrub_method, scrub_path

LOGGER = "mcp.access"


class AccessLog:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None,
                 flush_interval_s: float = 0.5, max_lines: int = 256) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._logger = logging.getLogger(LOGGER)
        # Decided once, at start: configure_logging has set the level by the time an app is built.
        self.enabled = self._logger.isEnabledFor(logging.INFO) if enabled is None else enabled
        self._interval = flush_interval_s
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        atexit.register(_flush_at_exit, weakref.ref(self))

    def request(self, status: int, method: str, path: str, seconds: float) -> None:
        # Callers pass a scrubbed path; scrubbing again is a cache hit (~0.1 µs) and catches one that did not.
        method, path = scrub_method(method), scrub_path(path)
        if status >= 500:
            self._logger.error("%d %s %s %.1fms", status, method, path, 1000.0 * seconds)
            return
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        # The same shape as every other log line: "<asctime> <LEVEL> <logger>: <message>".
        self._lines.append(f"{self._stamp},{int((now - second) * 1000):03d} INFO {LOGGER}: "
                           f"{status} {method} {path} {1000.0 * seconds:.1f}ms\n")
        if len(self._lines) >= self._max_lines:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
            except RuntimeError:  # no loop (a caller outside the server): write at once
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or gone: nothing else to tell


def _flush_at_exit(ref: weakref.ref[AccessLog]) -> None:
    access = ref()
    if access is not None:
        access.flush()
