"""This checkout's running processes: find them (by their MCP_PROJECT_ROOT marker), find its honcho, stop them.

Processes are recognised by the environment the scripts give them, not by pid files, so a removed
``.run`` (or a stale pid file) cannot hide a formation from ``scripts/stop-services``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

from mcp.formation.facts import ancestors, cmdline, parent, pid_alive, port_free, processes_with_environ
from mcp.ops.procfile import Process

# What this project runs: its service modules, its operators' tools, honcho, watchfiles.
_OUR_COMMANDS = re.compile(r"(-m\x00(services\.|mcp\.ops\.)|honcho|watchfiles)")
# honcho's own process: its executable (or the script python runs) is named honcho.
_HONCHO = re.compile(r"(^|\x00)([^\x00]*/)?honcho\x00")


def _joined(argv: list[str]) -> str:
    return "".join(f"{word}\x00" for word in argv)


def project_processes(root: Path) -> list[int]:
    """Processes started for this checkout (marked by MCP_PROJECT_ROOT) running our commands."""
    mine = ancestors()
    found = []
    for pid, environ, argv in processes_with_environ():
        if pid in mine or environ.get("MCP_PROJECT_ROOT") != str(root):
            continue
        if _OUR_COMMANDS.search(_joined(argv)):
            found.append(pid)
    return found


def _is_honcho(pid: int) -> bool:
    return bool(_HONCHO.search(_joined(cmdline(pid))))


def honcho_pids(root: Path, pid_file: Path | None = None) -> list[int]:
    """This checkout's honcho processes, found among the running processes (marked by MCP_PROJECT_ROOT).

    ``pid_file`` (.run/honcho.pid) adds its pid if that process is a honcho: the file alone is not
    trusted (its pid may have been reused) and not needed (``rm -rf .run`` must not hide a formation).
    """
    found = {pid for pid in project_processes(root) if _is_honcho(pid)}
    # honcho runs each Procfile process from a forked helper with its command line; only the top one counts.
    found = {pid for pid in found if parent(pid) not in found}
    if pid_file is not None:
        try:
            recorded = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            recorded = 0
        if recorded > 0 and pid_alive(recorded) and _is_honcho(recorded):
            found.add(recorded)
    return sorted(found)


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_honcho(pids: list[int], grace_s: float = 8.0) -> list[int]:
    """SIGTERM each honcho, give it ``grace_s`` to stop its processes, then SIGKILL it; the pids killed."""
    for pid in pids:
        for sig in (signal.SIGTERM, signal.SIGCONT):  # a stopped (SIGSTOP) honcho acts only once continued
            _kill(pid, sig)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if pid_alive(pid)]
    for pid in killed:
        print(f"honcho ({pid}) did not stop; killing it", file=sys.stderr)
        _kill(pid, signal.SIGKILL)
    return killed


def reap(root: Path, processes: list[Process], grace_s: float = 3.0) -> list[str]:
    """TERM (then KILL) leftover project processes; the problems that remain afterwards."""
    leftovers = project_processes(root)
    for pid in leftovers:
        print(f"stopping leftover process {pid}", file=sys.stderr)
        _kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(pid_alive(p) for p in leftovers):
        time.sleep(0.1)
    for pid in leftovers:
        if pid_alive(pid):
            _kill(pid, signal.SIGKILL)
    time.sleep(0.1 if leftovers else 0)
    problems = [f"process {pid} survived SIGKILL" for pid in leftovers if pid_alive(pid)]
    problems += [f"port {p.port} ({p.name}) is still in use" for p in processes if not port_free(p.port)]
    return problems
