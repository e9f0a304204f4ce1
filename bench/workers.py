"""The workers row's service: figma with two worker processes sharing one port, and its memory.

With a supervisor that has ``--workers`` (``mcp.ops.supervisor``), the service runs as an operator runs
it: ``python -m mcp.ops.supervisor --name mcp-figma --workers 2 -- python -m services.figma``. Where the
supervisor has no such option, two service processes are started directly on the same port (the
service binds with SO_REUSEPORT, so the kernel shares the connections between them); the row says
which. The workers' figures are summed over the workers (CPU, RSS); the supervisor's own CPU and RSS
are reported beside them, since an operator pays for it too.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.procs import Proc, ProcGroup, free_port, http, rss_mb, wait_until
from mcp.paths import PROJECT_ROOT

SUPERVISOR = [sys.executable, "-m", "mcp.ops.supervisor"]
SERVICE = [sys.executable, "-m", "services.figma"]
_START_TIMEOUT_S = 60.0


def supervisor_has_workers() -> bool:
    """Whether this checkout's supervisor takes ``--workers``."""
    try:
        out = subprocess.run([*SUPERVISOR, "--help"], capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--workers" in out.stdout


@dataclass
class Service:
    """One service under test: its port, the processes the bench started, and how it was launched."""

    launcher: str
    port: int
    started: list[Proc]
    supervisor: Proc | None = None
    count: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The service processes that answer calls (a supervisor's children, or the processes started)."""
        if self.supervisor is None:
            return [p.pid for p in self.started]
        try:
            children = psutil.Process(self.supervisor.pid).children(recursive=True)
        except psutil.Error:
            return []
        return [c.pid for c in children if _is_service(c)]

    def supervisor_pids(self) -> list[int]:
        return [self.supervisor.pid] if self.supervisor is not None else []

    def rss(self) -> dict[str, float | None]:
        """MB now: the workers together, the supervisor, and the sum (None where not measurable)."""
        workers = _sum(rss_mb(pid) for pid in self.worker_pids())
        supervisor = _sum(rss_mb(pid) for pid in self.supervisor_pids()) if self.supervisor else None
        total = None if workers is None else round(workers + (supervisor or 0.0), 1)
        return {"workers": workers, "supervisor": supervisor, "total": total}


def _is_service(proc: psutil.Process) -> bool:
    try:
        return "services.figma" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _sum(values: object) -> float | None:
    known = [v for v in values if v is not None]  # type: ignore[attr-defined]
    return round(sum(known), 1) if known else None


def _answering_pids(url: str) -> set[int]:
    """The pids named by a few /health answers on fresh connections (the kernel spreads them over the
    port's listeners), so that a worker counts as up only once it answers itself."""
    pids = set()
    for _ in range(8):
        try:
            answer = http("GET", url + "/health", timeout=2.0)
            pids.add(int(answer.json().get("pid")))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return pids


def _wait(service: Service, what: str) -> None:
    """Every worker up and answering /health itself; RuntimeError with the logs' tails otherwise."""
    def up() -> bool:
        if any(not p.alive() for p in service.started):
            return True
        workers = set(service.worker_pids())
        return len(workers) >= service.count and workers <= _answering_pids(service.url)

    wait_until(up, _START_TIMEOUT_S, interval=0.1)
    dead = [p for p in service.started if not p.alive()]
    if dead or len(service.worker_pids()) < service.count:
        tails = "\n".join(f"--- {p.name}:\n{p.output(1500)}" for p in service.started)
        raise RuntimeError(f"{what} did not start ({len(service.worker_pids())} of {service.count} workers):\n"
                           f"{tails}")


def start_supervised(procs: ProcGroup, env: dict[str, str], work: Path, name: str, workers: int) -> Service:
    """The service under its supervisor, as the Procfile runs it, with ``workers`` workers."""
    port = free_port()
    run_dir = work / f"{name}-run"
    argv = [*SUPERVISOR, "--name", "mcp-figma", "--port", str(port), "--log-dir", str(run_dir / "logs"),
            "--run-dir", str(run_dir)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    sup = procs.start(name, [*argv, "--", *SERVICE], {**env, "FIGMA_PORT": str(port)}, port=port,
                      cwd=PROJECT_ROOT)
    launcher = f"supervisor --workers {workers}" if workers != 1 else "supervisor, 1 worker"
    service = Service(launcher, port, [sup], supervisor=sup, count=workers)
    _wait(service, f"the supervised service ({launcher})")
    return service


def start_direct(procs: ProcGroup, env: dict[str, str], name: str, workers: int) -> Service:
    """``workers`` service processes started directly on one port (SO_REUSEPORT), no supervisor."""
    port = free_port()
    started = []
    for n in range(workers):
        started.append(procs.start(f"{name}-{n}", SERVICE, {**env, "FIGMA_PORT": str(port)}, port=port,
                                   cwd=PROJECT_ROOT))
    service = Service(f"{workers} processes on one port (SO_REUSEPORT), no supervisor", port, started, count=workers)
    _wait(service, "the service processes")
    return service
