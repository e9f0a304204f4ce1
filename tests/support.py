"""Small helpers the tests share: free ports, HTTP calls, polling, servers in threads and processes."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 30) -> Response:
    """One HTTP request; error statuses are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def healthy(url: str) -> bool:
    try:
        return http("GET", url, timeout=1).status == 200
    except OSError:
        return False


class LoopThread:
    """An asyncio loop in a daemon thread, for servers that tests call synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class ServiceProcess:
    """``python -m <module>`` as a real process with its own environment; stopped with SIGTERM."""

    def __init__(self, module: str, env: dict[str, str], port: int, log_path: Path,
                 limit_fds: int | None = None) -> None:
        self.module = module
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()

        def limits() -> None:
            if limit_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))

        self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=limits)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 20) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited with {self.proc.returncode}: {self.output()}")
            return healthy(self.url + "/health")

        wait_for(up, timeout, what=f"{self.module} health")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_URL") and k != "DATABASE_URL"}
    env.update(extra)
    return env


def call_tool(service: Any, instance_id: str, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """POST /{instance}/mcp/call on a running service; the CallToolResult (asserting HTTP 200)."""
    resp = http("POST", f"{service.url}/{instance_id}/mcp/call", {"name": name, "arguments": arguments or {}})
    assert resp.status == 200, resp.body
    return resp.json


def ok(result: Any) -> Any:
    """The structuredContent of a successful CallToolResult."""
    assert result["isError"] is False, result
    return result["structuredContent"]


def failed(result: Any) -> Any:
    """The structuredContent of an isError CallToolResult."""
    assert result["isError"] is True, result
    return result["structuredContent"]
