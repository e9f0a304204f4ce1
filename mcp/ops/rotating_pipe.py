"""Copy standard input, line by line, into a size-capped log file with rotated backups.

``honcho start > >(python -m mcp.ops.rotating_pipe logs/honcho.log) 2>&1`` (scripts/start-all-services):
honcho's console gets the same treatment as each process's own logs, because this is the supervisor's
rotation (``mcp.ops.supervisor.logfile.LogFile``): timestamped lines, rotated at SUPERVISOR_LOG_MAX_BYTES with
SUPERVISOR_LOG_BACKUPS old files (``--max-bytes`` and ``--backups`` override them).

It exits when its input ends, which is when the writer has exited. SIGINT, SIGHUP and SIGTERM are
ignored: a Ctrl-C in, or the closing of, the terminal that ran the start script must not cut honcho
off from its log (honcho would then die of a broken pipe), and a stop must not lose the last lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mcp.ops.supervisor.config import SupervisorConfigError, log_rotation
from mcp.ops.supervisor.logfile import MAX_LINE_BYTES, LogFile

READ_SIZE = 65536


def copy_lines(fd: int, logfile: LogFile) -> int:
    """Write every line read from ``fd`` until EOF; the number of lines that could not be written."""
    lost = 0
    pending = b""
    while chunk := os.read(fd, READ_SIZE):
        with contextlib.suppress(OSError):
            logfile.reopen_if_removed()  # rm -rf logs must not send the rest to a deleted file
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > MAX_LINE_BYTES:  # a writer that never ends its line must not grow our buffer
            lines.append(pending)
            pending = b""
        lost += _write(lines, logfile)
    if pending:
        lost += _write([pending], logfile)
    return lost


def _write(lines: list[bytes], logfile: LogFile) -> int:
    # Keep reading whatever happens to the file: a reader that stops would block the writer on a full pipe.
    lost = 0
    for line in lines:
        try:
            logfile.write_line(line.rstrip(b"\r").decode("utf-8", "replace"))
        except OSError:
            lost += 1
    return lost


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp.ops.rotating_pipe",
                                     description="Append standard input to a log file with size-based rotation.")
    parser.add_argument("path", type=Path, help="the log file, e.g. logs/honcho.log")
    parser.add_argument("--max-bytes", type=int, help="rotate at this size (default SUPERVISOR_LOG_MAX_BYTES)")
    parser.add_argument("--backups", type=int, help="rotated files kept (default SUPERVISOR_LOG_BACKUPS)")
    args = parser.parse_args(argv)
    try:
        max_bytes, backups = log_rotation(os.environ)
    except SupervisorConfigError as e:
        print(f"python -m mcp.ops.rotating_pipe: error: {e}", file=sys.stderr)
        return 2
    max_bytes = args.max_bytes if args.max_bytes is not None else max_bytes
    backups = args.backups if args.backups is not None else backups
    if max_bytes < 1 or backups < 0:
        print("python -m mcp.ops.rotating_pipe: error: --max-bytes must be positive and --backups not negative",
              file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logfile = LogFile(args.path, max_bytes, backups)
    try:
        lost = copy_lines(sys.stdin.fileno(), logfile)
    finally:
        logfile.close()
    if lost:
        print(f"python -m mcp.ops.rotating_pipe: {lost} lines could not be written to {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
