"""The child's output: each pipe copied line by line into its log file and echoed to ours (honcho shows it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import BinaryIO

from mcp.ops.supervisor.logfile import MAX_LINE_BYTES, LogFile

log = logging.getLogger(__name__)

# How long the pipes may take to reach EOF once the child is gone.
PUMP_DRAIN_TIMEOUT = 1.0


async def pump(stream: asyncio.StreamReader | None, logfile: LogFile, echo: BinaryIO) -> None:
    """Copy a child pipe line by line into its log file and to our own output, until EOF."""
    if stream is None:
        return
    pending = b""
    while chunk := await stream.read(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > MAX_LINE_BYTES:
            lines.append(pending)
            pending = b""
        emit(lines, logfile, echo)
    if pending:
        emit([pending], logfile, echo)


def emit(lines: list[bytes], logfile: LogFile, echo: BinaryIO) -> None:
    # Failures are swallowed: a pump that dies would leave the child blocked on a full pipe.
    for line in lines:
        try:
            logfile.write_line(line.rstrip(b"\r").decode("utf-8", "replace"))
        except OSError as e:
            log.debug("cannot write %s: %s", logfile.path, e)
    with contextlib.suppress(OSError, ValueError):
        echo.write(b"".join(line + b"\n" for line in lines))
        echo.flush()


async def drain(pumps: list[asyncio.Task[None]]) -> None:
    """Let the pumps reach EOF, but not forever: an escaped grandchild may hold the pipes."""
    _, pending = await asyncio.wait(pumps, timeout=PUMP_DRAIN_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
