"""Child processes of the bench: started on free ports, pinned to CPUs, measured, always stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a child inherits from the bench's own environment; everything else is set explicitly, so a
# developer's .env (rate limits, log level, ...) cannot change the figures.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> HttpAnswer:
    """One HTTP request with the standard library; error statuses are returned, not raised."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as e:
        return HttpAnswer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def healthy(url: str) -> bool:
    try:
        return http("GET", url, timeout=1.0).status == 200
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def rss_mb(pid: int) -> float | None:
    """Resident memory in MB (1024-based, as scripts/status counts), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def pin(pid: int, cpus: set[int] | None) -> None:
    """Move every thread of a running process onto ``cpus`` (no-op for None)."""
    if not cpus:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass  # a thread that just ended


def pinned_command(argv: Sequence[str], cpus: set[int] | None) -> list[str]:
    """``argv`` started under taskset (threads created later inherit the CPU set)."""
    if not cpus or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *argv]


class Proc:
    """A child process with its own log file, stopped with SIGTERM (then SIGKILL) by ``stop``."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, *,
                 port: int | None = None, cwd: Path | None = None, cpus: set[int] | None = None) -> None:
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.ready_s: float | None = None  # seconds from start until it first answered
        self.popen = subprocess.Popen(pinned_command(argv, cpus), env=env, cwd=cwd, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def wait_healthy(self, path: str = "/health", timeout: float = 30.0) -> float:
        """Seconds from start until ``path`` answers 200; RuntimeError with the log tail otherwise."""
        ok = wait_until(lambda: not self.alive() or healthy(self.url + path), timeout)
        if not ok or not self.alive():
            raise RuntimeError(f"{self.name} did not become healthy (exit {self.popen.poll()}):\n{self.output()}")
        self.ready_s = round(time.monotonic() - self.started_at, 3)
        return self.ready_s

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if not self._log.closed:
            self._log.close()


class ProcGroup:
    """Every process the bench started, so one ``stop_all`` (in a finally) ends them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], **kw: Any) -> Proc:
        proc = Proc(name, argv, env, self.log_dir, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
