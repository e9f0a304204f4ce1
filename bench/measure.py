"""Measuring rows: the load generator run (wrk or asyncio) with the CPU meter, interleaved rounds, RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import wrk
from bench.cpu import CpuMeter, ProcessCpu
from bench.loadspec import LoadResult, LoadSpec
from bench.options import Options
from bench.procs import Proc, pinned_command, rss_mb
from mcp.paths import PROJECT_ROOT


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def generate(spec: LoadSpec, work: Path, cpus: set[int] | None, use_wrk: bool) -> LoadResult:
    """One run of the load generator (wrk, or the asyncio one in its own process) on ``cpus``."""
    if use_wrk:
        return wrk.run(spec, work, cpus)
    path = work / "load-spec.json"
    spec.write(path)
    argv = pinned_command([sys.executable, "-m", "bench.load", str(path)], cpus)
    out = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=spec.warmup_s + spec.duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed: {out.stderr[-1500:]}")
    return LoadResult(**json.loads(out.stdout.strip().splitlines()[-1]))


class RssPeak(threading.Thread):
    """The highest RSS of some processes together while a run lasts (sampled every 200 ms)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            value = total_rss_mb(self.pids())
            if value is not None and (self.peak is None or value > self.peak):
                self.peak = value

    def stop(self) -> float | None:
        self._done.set()
        self.join(2)
        return self.peak


def total_rss_mb(pids: list[int]) -> float | None:
    values = [v for v in (rss_mb(pid) for pid in pids) if v is not None]
    return round(sum(values), 1) if values else None


@dataclass
class Row:
    """One line of the table: a server under one load, measured once per round.

    ``workers`` gives the pids serving the calls when that is not just ``server`` (a service with
    several workers); ``supervisor`` the pids of a supervisor whose CPU and memory are reported beside.
    """

    name: str
    label: str
    server: Proc
    spec: LoadSpec
    light: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    prime: bool = False  # one discarded run over all its targets first, so no round pays for a cold cache
    workers: Callable[[], list[int]] | None = None
    supervisor: Callable[[], list[int]] | None = None
    rounds: list[LoadResult] = field(default_factory=list)
    rss_idle_mb: float | None = None
    rss_loaded_mb: float | None = None
    rss_with_supervisor_idle_mb: float | None = None
    rss_with_supervisor_loaded_mb: float | None = None
    light_result: LoadResult | None = None

    def pids(self) -> list[int]:
        return self.workers() if self.workers is not None else [self.server.pid]

    def all_pids(self) -> list[int]:
        return self.pids() + (self.supervisor() if self.supervisor is not None else [])

    def median(self) -> LoadResult:
        ordered = sorted(self.rounds, key=lambda r: r.rps)
        return ordered[(len(ordered) - 1) // 2]

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "label": self.label, "available": True, "saturated": self.median().as_dict(),
               "rounds": [r.as_dict() for r in self.rounds],
               "light": self.light_result.as_dict() if self.light_result else None,
               "rss_idle_mb": self.rss_idle_mb, "rss_loaded_mb": self.rss_loaded_mb, **self.extra}
        if self.supervisor is not None:
            out["rss_with_supervisor_idle_mb"] = self.rss_with_supervisor_idle_mb
            out["rss_with_supervisor_loaded_mb"] = self.rss_with_supervisor_loaded_mb
        return out


class Measurer:
    """Runs loads on one load generator, on the load CPUs, each with the other-CPU figure."""

    def __init__(self, opts: Options, work: Path, load_cpus: set[int] | None, use_wrk: bool,
                 cpu: CpuMeter) -> None:
        self.opts = opts
        self.work = work
        self.load_cpus = load_cpus
        self.use_wrk = use_wrk
        self.cpu = cpu

    def load(self, spec: LoadSpec, row: Row | None = None) -> LoadResult:
        """One load run; with ``row``, also the CPU its server (and supervisor) spent per answered call."""
        server = ProcessCpu(row.pids) if row is not None else None
        supervisor = ProcessCpu(row.supervisor) if row is not None and row.supervisor is not None else None
        self.cpu.start()
        for meter in (server, supervisor):
            if meter is not None:
                meter.start()
        result = self._generate(spec)
        result.foreign_cpu = self.cpu.stop()
        if server is not None:
            result.server_cpu = server.stop()
            if result.server_cpu is not None and result.rps > 0:
                # CPU per second over calls per second: the warm-up runs at the same rate, so both cancel.
                result.server_us_per_call = round(1e6 * result.server_cpu / result.rps, 1)
        if supervisor is not None:
            cpu = supervisor.stop()
            if cpu is not None and result.rps > 0:
                result.supervisor_us_per_call = round(1e6 * cpu / result.rps, 1)
        return result

    def _generate(self, spec: LoadSpec) -> LoadResult:
        return generate(spec, self.work, self.load_cpus, self.use_wrk)

    def saturate(self, row: Row, round_no: int) -> None:
        log(f"{row.label}: {row.spec.connections} connections for {row.spec.duration_s:g} s"
            + (f" (round {round_no + 1} of {self.opts.rounds})" if self.opts.rounds > 1 else ""))
        if row.rss_idle_mb is None:
            row.rss_idle_mb = total_rss_mb(row.pids())
            row.rss_with_supervisor_idle_mb = total_rss_mb(row.all_pids())
        sampler, whole = RssPeak(row.pids), RssPeak(row.all_pids)
        sampler.start()
        whole.start()
        try:
            result = self.load(row.spec, row)
        finally:
            peak, whole_peak = sampler.stop(), whole.stop()
        if peak is not None:
            row.rss_loaded_mb = max(peak, row.rss_loaded_mb or 0.0)
        if whole_peak is not None:
            row.rss_with_supervisor_loaded_mb = max(whole_peak, row.rss_with_supervisor_loaded_mb or 0.0)
        row.rounds.append(result)
        other = f", other load {result.foreign_cpu:.2f} CPU" if result.foreign_cpu >= 0.05 else ""
        cpu = (f", server {result.server_cpu:.2f} CPU ({result.server_us_per_call:,.0f} us/call)"
               if result.server_us_per_call is not None else "")
        log(f"{row.label}: {result.rps:,.0f} calls/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            f"{result.errors} errors{cpu}{other}")

    def measure_all(self, rows: list[Row]) -> None:
        """Every row once per round (order rotated each round), then each one's light-load run."""
        ceiling = [r for r in rows if not r.light]
        main = [r for r in rows if r.light]
        primed: set[int] = set()
        for row in main:
            # One process can serve several rows (REST and MCP): its cache is filled once.
            if row.prime and row.server.pid not in primed:
                primed.add(row.server.pid)
                # Each worker fills its own cache from the calls the kernel hands it (about 1/N of them).
                seconds = self.opts.prime_s * max(1, len(row.pids()))
                log(f"{row.label}: priming ({seconds:g} s, not measured)")
                self.load(replace(row.spec, warmup_s=0.0, duration_s=seconds))
        for row in ceiling:
            self.saturate(row, 0)
        for n in range(self.opts.rounds):
            shift = n % len(main) if main else 0
            for row in main[shift:] + main[:shift]:
                self.saturate(row, n)
        if self.opts.light_connections > 0:
            for row in main:
                log(f"{row.label}: light load, {self.opts.light_connections} connection(s)")
                row.light_result = self.load(replace(row.spec, connections=self.opts.light_connections,
                                                      warmup_s=0.0, duration_s=self.opts.light_duration_s),
                                              row)

