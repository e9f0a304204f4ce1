"""``scripts/status`` and ``scripts/status --watch``: the status table once, or a live screen like ``pm2 monit``.

Without ``--watch`` this is ``mcp.formation.status`` (same options, same table, same exit code). With it,
the table is drawn again every ``--interval`` seconds (1 by default) with two more columns, each
process's requests/s and errors/s (``mcp.ops.scrape``: 5xx answers are errors). CPU is measured between
two frames. The first frame has no earlier reading, so its rates are ``-`` (and its CPU is the lifetime
average, as ``--cpu-sample 0``).

On a terminal it is a curses screen (``q`` or Ctrl-C leaves, the terminal is restored); otherwise, or with
``--json``, one frame per interval is printed (a table, or one JSON document per line). ``--count N``
stops after N frames. Leaving is exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import curses
import json
import locale
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from mcp.formation.facts import GroupSample
from mcp.formation.health import probe_ok
from mcp.formation.state import read_states
from mcp.formation.status import (
    COLUMNS,
    LIVE_HEALTH_TIMEOUT_S,
    apply_health,
    boxed,
    build_parser,
    build_rows,
    child_pids,
    notes,
    process_lines,
    run,
    sample_now,
)
from mcp.ops.scrape import Counts, rates, read_counts

DEFAULT_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.1
WATCH_COLUMNS = (*COLUMNS, "req/s", "err/s")
_ASCII_BOX = str.maketrans("┌┬┐├┼┤└┴┘─│", "+++++++++-|")


class Watch:
    """Successive frames of the status rows: CPU and request rates come from the previous frame's readings."""

    def __init__(self, run_dir: Path, live_health: bool = False, timeout: float = LIVE_HEALTH_TIMEOUT_S) -> None:
        self.run_dir = run_dir
        self.live_health = live_health
        self.timeout = timeout
        self._samples: dict[int, GroupSample] | None = None
        self._counts: dict[str, tuple[int | None, Counts | None]] = {}

    async def rows(self) -> list[dict[str, Any]]:
        """The rows now, each with ``requests_per_s`` and ``errors_per_s`` (None when unknown)."""
        states = read_states(self.run_dir)
        running = [s for s in states if s.get("status") in ("starting", "running") and s.get("child_pid")]
        metric_targets = [s for s in running if isinstance(s.get("port"), int)]
        health_urls = sorted({s["health_url"] for s in running if s.get("health_url")}) if self.live_health else []
        results = await asyncio.gather(
            *(read_counts(f"http://127.0.0.1:{s['port']}/metrics", self.timeout) for s in metric_targets),
            *(probe_ok(url, self.timeout) for url in health_urls))
        readings = dict(zip((s["name"] for s in metric_targets), results[:len(metric_targets)], strict=True))
        samples = sample_now(child_pids(states))
        rows = build_rows(states, samples, self._samples, time.time())
        apply_health(rows, dict(zip(health_urls, results[len(metric_targets):], strict=True)), time.time())
        self._samples = samples
        counts: dict[str, tuple[int | None, Counts | None]] = {}
        for row in rows:
            reading = readings.get(row["name"])
            # One worker's counters start from 0 with each child; several workers' sum survives their restarts
            # (the supervisor's metrics folder) and starts over only with the supervisor.
            counter_owner = row["pid"] if len(row["workers"]) <= 1 else row["supervisor_pid"]
            previous_owner, previous = self._counts.get(row["name"], (None, None))
            if previous is not None and previous_owner != counter_owner:
                previous = Counts(0.0, 0.0, previous.at)  # another child since the last frame: it counted from 0
            pace = rates(previous, reading)
            row["requests_per_s"] = None if pace is None else round(pace.requests, 2)
            row["errors_per_s"] = None if pace is None else round(pace.errors, 2)
            counts[row["name"]] = (counter_owner, reading)
        self._counts = counts
        return rows


def rate_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def frame_lines(rows: Sequence[Mapping[str, Any]], interval: float, at: datetime) -> list[str]:
    """One frame: a title line, the table with its two rate columns, then the notes."""
    title = f"scripts/status --watch  {at:%H:%M:%S}  every {interval:g}s"
    if not rows:
        return [title, "no processes are running (no state files)"]
    body = [[*cells, *((rate_cell(r["requests_per_s"]), rate_cell(r["errors_per_s"])) if i == 0 else ("", ""))]
            for r in rows for i, cells in enumerate(process_lines(r))]
    return [title, *boxed(WATCH_COLUMNS, body), *notes(rows)]


def print_frames(watch: Watch, interval: float, count: int | None, as_json: bool, out: TextIO) -> int:
    """No terminal (or --json): one frame per interval on ``out``, a blank line between tables."""
    frames = 0
    while True:
        started = time.monotonic()
        rows = asyncio.run(watch.rows())
        if as_json:
            out.write(json.dumps({"at": time.time(), "processes": rows}) + "\n")
        else:
            out.write(("\n" if frames else "") + "\n".join(frame_lines(rows, interval, datetime.now())) + "\n")
        out.flush()
        frames += 1
        if count is not None and frames >= count:
            return 0
        time.sleep(max(0.0, started + interval - time.monotonic()))


def run_screen(watch: Watch, interval: float, count: int | None) -> int:
    """The curses screen; curses.wrapper gives the terminal back as it was, also after an exception."""
    locale.setlocale(locale.LC_ALL, "")  # so curses writes the box characters in the terminal's encoding
    # The C library's codeset, which curses writes with (Python's own UTF-8 mode does not change it).
    ascii_only = "utf" not in locale.nl_langinfo(locale.CODESET).lower()
    return curses.wrapper(_screen, watch, interval, count, ascii_only)


def _screen(stdscr: curses.window, watch: Watch, interval: float, count: int | None, ascii_only: bool) -> int:
    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    frames = 0
    while True:
        started = time.monotonic()
        lines = frame_lines(asyncio.run(watch.rows()), interval, datetime.now())
        lines[0] += "  (q to quit)"
        if ascii_only:  # curses cannot write what the terminal's encoding lacks
            lines = [line.translate(_ASCII_BOX).encode("ascii", "replace").decode() for line in lines]
        _draw(stdscr, lines)
        frames += 1
        if count is not None and frames >= count:
            return 0
        while (left := started + interval - time.monotonic()) > 0:
            stdscr.timeout(max(1, int(left * 1000)))
            key = stdscr.getch()
            if key in (ord("q"), ord("Q")):
                return 0
            if key == curses.KEY_RESIZE:
                _draw(stdscr, lines)


def _draw(stdscr: curses.window, lines: Sequence[str]) -> None:
    height, width = stdscr.getmaxyx()
    stdscr.erase()
    for y, line in enumerate(lines[:height]):
        # The bottom-right cell cannot be written without curses raising; a line that is cut loses its end.
        with contextlib.suppress(curses.error):
            stdscr.addnstr(y, 0, line, max(0, width - 1), curses.A_BOLD if y == 0 else curses.A_NORMAL)
    stdscr.refresh()


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = build_parser(env)
    parser.epilog = (f"{parser.epilog} With --watch: a live screen like pm2 monit (q or Ctrl-C leaves, exit status "
                     "0); requests/s and errors/s (5xx answers) from each process's /metrics, '-' on the first frame.")
    parser.add_argument("--watch", action="store_true",
                        help="refresh the table every --interval seconds with requests/s and errors/s, like pm2 monit")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                        help=f"seconds between frames of --watch (default {DEFAULT_INTERVAL_S:g})")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop --watch after N frames")
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    args = _parser(os.environ if env is None else env).parse_args(argv)
    if not args.watch:
        return run(args)
    if args.interval < MIN_INTERVAL_S or (args.count is not None and args.count < 1):
        print(f"scripts/status: error: --interval must be at least {MIN_INTERVAL_S:g} and --count at least 1",
              file=sys.stderr)
        return 2
    watch = Watch(args.run_dir.absolute(), live_health=args.live)
    try:
        if sys.stdout.isatty() and sys.stdin.isatty() and not args.json:
            return run_screen(watch, args.interval, args.count)
        return print_frames(watch, args.interval, args.count, args.json, sys.stdout)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
