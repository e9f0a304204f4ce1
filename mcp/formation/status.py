"""What every supervised process is doing now: status, health, restarts, uptime, CPU, memory, port.

``python -m mcp.formation.status`` (``scripts/status``) prints a table like ``pm2 status``, or ``--json``. The
rows come from the supervisors' state files (``mcp.formation.state.read_states``) plus, for each running
child, figures read through psutil (``mcp.formation.facts``) for the child's whole process group (the
supervisor starts each child in its own session, so the group also holds what the child started: under
Procfile.dev that is the service itself, below watchfiles):

- CPU: percent of one core, sampled over ``cpu_sample`` seconds (0.2 by default); with a sample of 0,
  the average over each process's lifetime, which needs no waiting.
- memory: resident set size (RSS), summed over the group.
- uptime: seconds since the supervisor last (re)started the child.

A process run with several workers (``--workers``) has one row with their sums (CPU, memory, restarts) and,
in ``workers``, a row per worker (pid, status, health, restarts, uptime, CPU, memory); the table shows those
under their process. With one worker, ``workers`` holds that one and the table shows the process alone.

Health is the supervisor's last check unless a live check is asked for: then ``GET /health`` of each
running child (``mcp.formation.health``, the supervisor's own probe), with a short timeout, replaces it
(``health_source`` says which).

Exit codes: 0 when there is at least one process and every one is running and healthy, 1 otherwise.

``scripts/status`` runs ``mcp.ops.monit``, which adds ``--watch`` (a live screen with request rates read
from each process's ``/metrics``) to these options; the API reads the rows from here without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp.formation.facts import GroupSample, cpu_percent, sample_groups
from mcp.formation.health import probe_ok
from mcp.formation.state import read_states
from mcp.paths import PROJECT_ROOT

Prober = Callable[[str, float], Awaitable[bool]]

DEFAULT_CPU_SAMPLE_S = 0.2
LIVE_HEALTH_TIMEOUT_S = 1.0
# Only a child that exists can be asked; an errored or stopped one keeps the supervisor's verdict
# (its port may even belong to someone else, whose answer would say nothing about us).
_CHECKABLE = ("starting", "running")
COLUMNS = ("process", "pid", "status", "health", "restarts", "uptime", "cpu", "memory", "port")


def workers_of(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A state's workers; a state file written before workers existed (or a stale one) counts as one worker."""
    workers = state.get("workers")
    if state.get("stale") or not isinstance(workers, list) or not workers:
        return [{**state, "index": 0}]
    return [w for w in workers if isinstance(w, Mapping)]


def child_pids(states: Sequence[Mapping[str, Any]]) -> list[int]:
    """Every running worker's pid (the leader of its process group), to sample."""
    return [w["child_pid"] for s in states for w in workers_of(s) if isinstance(w.get("child_pid"), int)]


def worker_row(worker: Mapping[str, Any], after: Mapping[int, GroupSample], before: Mapping[int, GroupSample] | None,
               now: float) -> dict[str, Any]:
    """One worker's figures: its state, CPU and memory of its process group, uptime."""
    child = worker.get("child_pid") if isinstance(worker.get("child_pid"), int) else None
    sample = after.get(child) if child else None
    started = worker.get("started_at")
    alive = child is not None and worker.get("status") in ("starting", "running")
    return {
        "index": worker.get("index", 0),
        "pid": child,
        "status": worker.get("status"),
        "health": worker.get("health", "unknown"),
        "last_health_at": worker.get("last_health_at"),
        "restarts": worker.get("restarts", 0),
        "operator_restarts": worker.get("operator_restarts", 0),
        "uptime": round(max(0.0, now - started), 1) if alive and isinstance(started, (int, float)) else None,
        "cpu": round(cpu_percent((before or {}).get(child), sample), 1) if sample else None,
        "memory": sample.rss_bytes if sample else None,
        "reason": worker.get("reason"),
        "last_exit": worker.get("last_exit"),
    }


def _total(values: Sequence[Any]) -> Any:
    known = [v for v in values if v is not None]
    return round(sum(known), 1) if known else None


def build_rows(states: Sequence[Mapping[str, Any]], after: Mapping[int, GroupSample],
               before: Mapping[int, GroupSample] | None, now: float) -> list[dict[str, Any]]:
    """One row per process, in the states' order, from the state files and two samples of the groups."""
    rows = []
    for state in states:
        workers = [worker_row(w, after, before, now) for w in workers_of(state)]
        child = state.get("child_pid") if isinstance(state.get("child_pid"), int) else None
        started = state.get("started_at")
        alive = child is not None and state.get("status") in ("starting", "running")
        rows.append({
            "name": state.get("name"),
            "pid": child,
            "supervisor_pid": None if state.get("stale") else state.get("pid"),
            "status": state.get("status"),
            "health": state.get("health", "unknown"),
            "health_source": "supervisor",
            "last_health_at": state.get("last_health_at"),
            "restarts": state.get("restarts", 0),
            "operator_restarts": state.get("operator_restarts", 0),
            "uptime": round(max(0.0, now - started), 1) if alive and isinstance(started, (int, float)) else None,
            "cpu": _total([w["cpu"] for w in workers]),
            "memory": _total([w["memory"] for w in workers]),
            "workers": workers,
            "port": state.get("port"),
            "reason": state.get("reason"),
            "last_exit": state.get("last_exit"),
            "stale": bool(state.get("stale")),
            "health_url": state.get("health_url"),
            "log_out": state.get("log_out"),
            "log_error": state.get("log_error"),
        })
    return rows


def apply_health(rows: list[dict[str, Any]], answers: Mapping[str, bool], checked_at: float) -> None:
    """Replace the stored health of each checked child by the answer its health URL just gave. With several
    workers that answer comes from any one of them, so the process is healthy only if the supervisor also
    found every worker healthy."""
    for row in rows:
        if row["status"] in _CHECKABLE and row["pid"] and row["health_url"] in answers:
            workers = row.get("workers") or []
            healthy = answers[row["health_url"]] and (
                len(workers) <= 1 or all(w["health"] == "healthy" for w in workers))
            row.update(health="healthy" if healthy else "unhealthy", health_source="live", last_health_at=checked_at)


def sample_now(pgids: Sequence[int]) -> dict[int, GroupSample]:
    """CPU and memory of each wanted process group, now."""
    return sample_groups(pgids, at=time.monotonic(), now=time.time())


async def gather_rows(run_dir: Path, *, cpu_sample: float = DEFAULT_CPU_SAMPLE_S, live_health: bool = False,
                      prober: Prober = probe_ok, timeout: float = LIVE_HEALTH_TIMEOUT_S) -> list[dict[str, Any]]:
    """The status rows. Awaits, never blocks, for the CPU sample and the health checks, which overlap."""
    states = read_states(run_dir)
    pgids = child_pids(states)
    before = sample_now(pgids) if cpu_sample > 0 else None
    urls = sorted({s["health_url"] for s in states
                   if s.get("status") in _CHECKABLE and s.get("child_pid") and s.get("health_url")}
                  if live_health else set())
    _, *answers = await asyncio.gather(asyncio.sleep(cpu_sample), *(prober(url, timeout) for url in urls))
    after = sample_now(pgids)
    rows = build_rows(states, after, before, time.time())
    apply_health(rows, dict(zip(urls, answers, strict=True)), time.time())
    return rows


def all_ok(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when there is something to run and all of it runs and is healthy (the exit code 0 case)."""
    return bool(rows) and all(r["status"] == "running" and r["health"] == "healthy" for r in rows)


# --------------------------------------------------------------------------------------------------
# Formatting


def human_bytes(n: int | None) -> str:
    """``12.3 MB``; 1024-based, as pm2 and top count."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """``5m 3s``, ``2h 5m``, ``3d 4h``: the two largest units."""
    if seconds is None:
        return "-"
    s = int(seconds)
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{value}{unit}" for value, unit in parts[:2])


def restarts_cell(row: Mapping[str, Any]) -> str:
    """Crashes and hangs the supervisor restarted, then (``+N op``) restarts and reloads an operator asked for."""
    asked = row.get("operator_restarts") or 0
    return f"{row['restarts']} +{asked} op" if asked else str(row["restarts"])


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """A row as the table shows it, in COLUMNS order."""
    cpu = row["cpu"]
    return [
        str(row["name"]), "-" if row["pid"] is None else str(row["pid"]), str(row["status"]), str(row["health"]),
        restarts_cell(row), human_duration(row["uptime"]), "-" if cpu is None else f"{cpu:.1f}%",
        human_bytes(row["memory"]), "-" if row["port"] is None else str(row["port"]),
    ]


def worker_cells(worker: Mapping[str, Any], last: bool) -> list[str]:
    """A worker's line under its process: the process's columns, for the worker, without the port."""
    branch = "└" if last else "├"
    return table_cells({**worker, "name": f" {branch} worker {worker['index']}", "port": None})


def process_lines(row: Mapping[str, Any]) -> list[list[str]]:
    """A process's line and, when it has several workers, one line per worker under it (its pid cell empty:
    the workers' pids are theirs)."""
    workers = row.get("workers") or []
    if len(workers) <= 1:
        return [table_cells(row)]
    head = table_cells({**row, "pid": None})
    return [head, *(worker_cells(w, i == len(workers) - 1) for i, w in enumerate(workers))]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A boxed table like ``pm2 status``, then one line per process that has a reason to explain."""
    return "\n".join(boxed(list(COLUMNS), [line for r in rows for line in process_lines(r)]) + notes(rows))


def boxed(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a table drawn with box characters, each column as wide as its widest cell."""
    cells = [list(header), *map(list, body)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def border(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    def line(values: list[str]) -> str:
        return "│" + "│".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True)) + "│"

    out = [border("┌", "┬", "┐"), line(cells[0]), border("├", "┼", "┤")]
    out += [line(c) for c in cells[1:]]
    out.append(border("└", "┴", "┘"))
    return out


def notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the table cannot say: why a process is not running, and supervisors that are gone."""
    out = []
    for row in rows:
        if row["status"] != "running" and row.get("reason"):
            out.append(f"{row['name']}: {row['reason']}")
        if row.get("stale"):
            out.append(f"{row['name']}: its supervisor is gone (state file left behind)")
    return out


# --------------------------------------------------------------------------------------------------
# Command line


def default_run_dir(env: Mapping[str, str]) -> Path:
    """MCP_RUN_DIR, else ``<project root>/.run`` (the supervisor's default)."""
    if env.get("MCP_RUN_DIR"):
        return Path(env["MCP_RUN_DIR"])
    return Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT) / ".run"


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The options of ``scripts/status``; ``mcp.ops.monit`` adds ``--watch`` and its own to them."""
    parser = argparse.ArgumentParser(
        prog="scripts/status",
        description="Show every supervised process: pid, status, health, restarts, uptime, CPU, memory, port.",
        epilog="Exit status: 0 if every process is running and healthy, 1 otherwise (including when none runs). "
               "CPU is % of one core over --cpu-sample seconds; memory is resident (RSS), both for the child's "
               "whole process group.",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--run-dir", type=Path, default=default_run_dir(env),
                        help="where the supervisors keep state/<name>.json (env MCP_RUN_DIR, default <root>/.run)")
    parser.add_argument("--live", action="store_true",
                        help=f"check GET /health of each running process now ({LIVE_HEALTH_TIMEOUT_S:g} s timeout) "
                             "instead of showing the supervisor's last check")
    parser.add_argument("--cpu-sample", type=float, default=DEFAULT_CPU_SAMPLE_S, metavar="SECONDS",
                        help=f"measure CPU over this long (default {DEFAULT_CPU_SAMPLE_S:g}); "
                             "0 shows the average over each process's lifetime")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the rows once, as ``args`` (from ``build_parser``) ask; the exit code says whether all is well."""
    if args.cpu_sample < 0:
        print("scripts/status: error: --cpu-sample must not be negative", file=sys.stderr)
        return 2
    rows = asyncio.run(gather_rows(args.run_dir.absolute(), cpu_sample=args.cpu_sample, live_health=args.live))
    if args.json:
        print(json.dumps({"processes": rows, "ok": all_ok(rows)}, indent=2))
    elif not rows:
        print(f"no processes are running (no state files in {args.run_dir / 'state'})")
    else:
        print(format_table(rows))
    return 0 if all_ok(rows) else 1


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """``python -m mcp.formation.status``: the table (or JSON) once."""
    return run(build_parser(os.environ if env is None else env).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
