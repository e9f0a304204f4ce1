"""How much CPU something other than the bench used during a run ("foreign" load, from /proc).

On a shared machine a test suite running next to the bench takes CPU from whichever process is
under load; every run reports it so a reader can tell a disturbed figure from a real one. Ours is
the bench's own process tree plus its PostgreSQL (the postmaster and its backends): their user and
system time, including that of children already reaped (wrk runs are waited for by the bench).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> int:
    """CPU time all processes of the machine used (user, nice, system; all CPUs), from /proc/stat.

    Interrupt and softirq time are left out: no process is charged for them, and most of it is the
    kernel moving the bench's own loopback traffic.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:4]]
    return sum(fields)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime + cutime + cstime) for every process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[1] is ppid; utime, stime, cutime, cstime are fields 14-17 of stat (11-14 here).
        out[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return out


def _tree_jiffies(roots: set[int]) -> int:
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [r for r in roots if r in procs]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return sum(procs[p][1] for p in seen)


class CpuMeter:
    """``start()``, then ``stop()`` -> CPUs used by others on average during the interval."""

    def __init__(self, roots: Callable[[], set[int]]) -> None:
        self._roots = roots
        self._t0 = 0.0
        self._busy0 = 0
        self._ours0 = 0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = _busy_jiffies()
        self._ours0 = _tree_jiffies(self._roots())

    def stop(self) -> float:
        elapsed = time.monotonic() - self._t0
        busy = _busy_jiffies() - self._busy0
        ours = _tree_jiffies(self._roots()) - self._ours0
        return round(max(0.0, (busy - ours) / _HZ / elapsed), 2) if elapsed > 0 else 0.0


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) one process has used so far, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


class ProcessCpu:
    """``start()``, then ``stop()`` -> the CPUs some processes used together on average during the interval.

    The pids are asked for again at the end, so a worker that was replaced during the run is left out
    of the figure rather than counted with a negative share.
    """

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._t0 = 0.0
        self._cpu0: dict[int, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {pid: cpu for pid in self._pids() if (cpu := process_cpu_s(pid)) is not None}

    def stop(self) -> float | None:
        elapsed = time.monotonic() - self._t0
        used = 0.0
        seen = False
        for pid in self._pids():
            cpu = process_cpu_s(pid)
            if cpu is not None and pid in self._cpu0:
                used += cpu - self._cpu0[pid]
                seen = True
        if not seen or elapsed <= 0:
            return None
        return round(used / elapsed, 3)


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
