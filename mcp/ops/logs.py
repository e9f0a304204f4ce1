"""``scripts/logs [NAME...] [-f] [-n N] [--errors]``: the processes' logs interleaved, like ``pm2 logs``.

For each process (the Procfile's, or those named) it reads ``logs/<name>-out.log`` and
``logs/<name>-error.log``, takes the last N records of each (a record: a timestamped line and the lines
without a timestamp after it, see ``mcp.ops.logread``), sorts them all by timestamp and prints each line
as ``<name> out | <line>`` (``err`` for the error log), the prefix in the process's own colour when
stdout is a terminal and NO_COLOR is not set. ``-f`` then prints new lines as they are written, across
rotations, until interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mcp.ops.logread import EARLIEST, Follower, Grouper, Record
from mcp.ops.procfile import procfile_processes
from mcp.paths import PROJECT_ROOT

DEFAULT_LINES = 15  # as pm2 logs
POLL_INTERVAL_S = 0.2
# Cyan, yellow, green, magenta, blue and their bright forms: red is left for the error stream's label.
PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
ERROR_LABEL_COLOUR = "31"
RESET = "\x1b[0m"


@dataclass(frozen=True)
class Source:
    """One log file of one process."""

    name: str
    stream: str  # "out" or "err"
    path: Path
    colour: str | None


def procfile_names(procfile: Path) -> list[str]:
    """The Procfile's supervised processes, in its order."""
    return [p.name for p in procfile_processes(procfile)] if procfile.is_file() else []


def logged_names(log_dir: Path) -> list[str]:
    """Every process with a log file in ``log_dir`` (also one the Procfile no longer lists)."""
    found = set()
    for suffix in ("-out.log", "-error.log"):
        found |= {path.name[:-len(suffix)] for path in log_dir.glob(f"*{suffix}")}
    return sorted(found)


def use_colour(choice: str, stream: TextIO, env: Mapping[str, str]) -> bool:
    """``auto``: only on a terminal, and never when NO_COLOR is set to anything (https://no-color.org)."""
    if choice != "auto":
        return choice == "always"
    return not env.get("NO_COLOR") and stream.isatty()


def sources(names: Sequence[str], known: Sequence[str], log_dir: Path, errors_only: bool,
            colour: bool) -> list[Source]:
    """The files to read, process by process; each process keeps its colour whichever are shown."""
    out = []
    for name in names:
        paint = PALETTE[known.index(name) % len(PALETTE)] if colour else None
        if not errors_only:
            out.append(Source(name, "out", log_dir / f"{name}-out.log", paint))
        out.append(Source(name, "err", log_dir / f"{name}-error.log", paint))
    return out


class Printer:
    """Writes records with their process's prefix, aligned on the longest name."""

    def __init__(self, stream: TextIO, width: int) -> None:
        self.stream = stream
        self.width = width

    def prefix(self, source: Source) -> str:
        name = f"{source.name:<{self.width}}"
        if source.colour is None:
            return f"{name} {source.stream} | "
        label = f"\x1b[{ERROR_LABEL_COLOUR}m{source.stream}" if source.stream == "err" else source.stream
        return f"\x1b[{source.colour}m{name} {label}\x1b[{source.colour}m |{RESET} "

    def write(self, batch: Sequence[tuple[Source, Record]]) -> None:
        """Print a batch in timestamp order; ties keep the order of the sources, then of the file."""
        for source, record in sorted(batch, key=lambda item: item[1].at):
            start = self.prefix(source)
            self.stream.write("".join(f"{start}{line}\n" for line in record.lines))
        self.stream.flush()


def show(files: Sequence[Source], lines: int, follow: bool, printer: Printer,
         poll_interval: float = POLL_INTERVAL_S) -> None:
    """The last ``lines`` records of every file, interleaved; then, with ``follow``, new lines forever."""
    followers = [Follower(source.path) for source in files]
    try:
        batch = []
        groupers = []
        for source, follower in zip(files, followers, strict=True):
            records = follower.start(lines)
            batch += [(source, record) for record in records]
            groupers.append(Grouper(records[-1].at if records else EARLIEST))
        printer.write(batch)
        while follow:
            time.sleep(poll_interval)
            batch = []
            for source, follower, grouper in zip(files, followers, groupers, strict=True):
                batch += [(source, record) for record in grouper.feed(follower.poll())]
            if batch:
                printer.write(batch)
    finally:
        for follower in followers:
            follower.close()


def default_log_dir(env: Mapping[str, str]) -> Path:
    """MCP_LOG_DIR, else ``<project root>/logs`` (the supervisor's default)."""
    if env.get("MCP_LOG_DIR"):
        return Path(env["MCP_LOG_DIR"])
    return Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT) / "logs"


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    root = Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)
    parser = argparse.ArgumentParser(
        prog="scripts/logs",
        description="Show the processes' logs (logs/<name>-out.log and -error.log) interleaved by time, "
                    "each line prefixed with its process, like pm2 logs.",
        epilog="A record is a timestamped line and the lines without a timestamp after it (a traceback); "
               "-n counts records per file. Exit status: 0, or 2 for an unknown process name.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="processes to show (default: every process of the Procfile)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    parser.add_argument("-n", "--lines", type=int, default=DEFAULT_LINES, metavar="N",
                        help=f"last N records of each log file first (default {DEFAULT_LINES}; 0 for none)")
    parser.add_argument("--errors", action="store_true", help="only the error logs (<name>-error.log)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the prefixes: auto (default) when stdout is a terminal and NO_COLOR is unset")
    parser.add_argument("--log-dir", type=Path, default=default_log_dir(env),
                        help="where the logs are (env MCP_LOG_DIR, default <root>/logs)")
    parser.add_argument("--procfile", type=Path, default=root / "Procfile",
                        help="whose process names to use (default <root>/Procfile)")
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None, stdout: TextIO | None = None) -> int:
    env = os.environ if env is None else env
    out = sys.stdout if stdout is None else stdout
    args = _parser(env).parse_args(argv)
    if args.lines < 0:
        print("scripts/logs: error: -n must not be negative", file=sys.stderr)
        return 2
    listed = procfile_names(args.procfile)
    known = listed + [name for name in logged_names(args.log_dir) if name not in listed]
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"scripts/logs: error: unknown process {', '.join(map(repr, unknown))}; known: "
              f"{', '.join(known) or f'none (no Procfile at {args.procfile}, no logs in {args.log_dir})'}",
              file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.names)) or listed or known
    files = sources(names, known, args.log_dir, args.errors, use_colour(args.color, out, env))
    if not args.follow and not any(source.path.exists() for source in files):
        print(f"scripts/logs: no log files in {args.log_dir} yet", file=sys.stderr)
    try:
        show(files, args.lines, args.follow, Printer(out, max((len(n) for n in names), default=0)))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (| head): nothing more to say, and Python must not complain at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
