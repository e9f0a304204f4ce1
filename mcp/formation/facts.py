"""Facts about running processes and ports, read through psutil: alive or not, start time, parent,
command line, environment, CPU and memory of a process group, the pid listening on a port, and whether a
port is free.

Every question about a process that someone may not look at (another user's) answers "unknown" (None or
empty) rather than raising, because the callers (status tools, the supervisor, the stop script) must go
on with the processes they can see.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: two processes with one pid differ here.

    Ticks (not psutil's float epoch seconds) because the supervisors' state files record this figure.
    """
    try:
        created = psutil.Process(pid).create_time()
    except _GONE:
        return None
    return round((created - psutil.boot_time()) * CLOCK_TICKS)


def parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except _GONE:
        return None


def ancestors(pid: int | None = None) -> set[int]:
    """``pid`` (default: this process) and every process above it."""
    try:
        proc = psutil.Process(pid)
        return {proc.pid, *(p.pid for p in proc.parents())}
    except _GONE:
        return set() if pid is None else {pid}


def cmdline(pid: int) -> list[str]:
    """The process's argv; empty when it is gone or hidden."""
    try:
        return psutil.Process(pid).cmdline()
    except _GONE:
        return []


def processes_with_environ() -> Iterator[tuple[int, dict[str, str], list[str]]]:
    """(pid, environment, argv) of every process whose environment we may read."""
    for proc in psutil.process_iter():
        with contextlib.suppress(*_GONE, OSError):
            yield proc.pid, proc.environ(), proc.cmdline()


@dataclass(frozen=True)
class GroupSample:
    """CPU and memory of one process group at one moment."""

    cpu_seconds: float  # user + system time of every member
    rss_bytes: int
    lifetime_cpu: float  # sum over members of their CPU % averaged over their own lifetime
    at: float  # time.monotonic() of the reading


def sample_groups(pgids: Iterable[int], at: float, now: float) -> dict[int, GroupSample]:
    """One pass over the processes summing the members of each wanted group; ``now`` is wall time (for
    the lifetime average), ``at`` the monotonic time stamped on the samples. A group whose members are
    all gone has no sample, rather than zeros."""
    wanted = {pgid for pgid in pgids if pgid}
    if not wanted:
        return {}
    totals: dict[int, list[float]] = {}
    for proc in psutil.process_iter():
        try:
            pgid = os.getpgid(proc.pid)
            if pgid not in wanted:
                continue
            with proc.oneshot():
                if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                    continue
                times = proc.cpu_times()
                rss = proc.memory_info().rss
                created = proc.create_time()
        except (*_GONE, OSError):
            continue
        seconds = times.user + times.system
        total = totals.setdefault(pgid, [0.0, 0, 0.0])
        total[0] += seconds
        total[1] += rss
        elapsed = now - created
        if elapsed > 0:
            total[2] += 100.0 * seconds / elapsed
    return {pgid: GroupSample(t[0], int(t[1]), t[2], at) for pgid, t in totals.items()}


def cpu_percent(before: GroupSample | None, after: GroupSample) -> float:
    """CPU % of one core between two samples of a group; its lifetime average without an earlier one."""
    interval = after.at - before.at if before is not None else 0.0
    if before is None or interval <= 0:
        return after.lifetime_cpu
    # A member that exited between the samples takes its CPU time with it: never report below zero.
    return max(0.0, 100.0 * (after.cpu_seconds - before.cpu_seconds) / interval)


def port_owner(port: int) -> int | None:
    """The pid of a process with a TCP socket listening on ``port``, or None if it cannot be found."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    owners = [c.pid for c in connections
              if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid is not None]
    # Forked servers share the socket; the lowest pid is usually the parent.
    return min(owners) if owners else None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now: the one port check of the formation.

    A bind, not a connect: it also sees a socket that is bound but not yet accepting (a server still
    starting), and it does not knock on the door of whatever listens there. SO_REUSEADDR, as servers set
    it, so connections of a stopped server still in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
